"""What pre-training learns: one command per analysis (contextual embeddings, cross-lingual
transfer, the language vector), each writing a table and a picture."""

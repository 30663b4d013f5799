"""TFDS builders of the data shipped with jaxssl (array_record, no TensorFlow): importing this
package registers them. Read them through ``jaxssl.data.corpora``.

- ``jaxssl_corpus``: English and Chinese documents for pretraining (corpus.py);
- ``jaxssl_sentiment``: VADER's rated English sentences (sentiment.py);
- ``jaxssl_sentiment_zh``, ``jaxssl_pos``, ``jaxssl_paraphrase``, ``jaxssl_qa``: the other
  fine-tuning tasks (one module each);
- ``jaxssl_sequences``: DNA and protein sequences with class labels (sequences.py);
- ``jaxssl_super_glue``: TFDS's SuperGLUE without TensorFlow (super_glue.py; downloaded once).
"""

from jaxssl.data.builders import corpus
from jaxssl.data.builders import paraphrase
from jaxssl.data.builders import pos
from jaxssl.data.builders import sentiment
from jaxssl.data.builders import sentiment_zh
from jaxssl.data.builders import sequences
from jaxssl.data.builders import squad
from jaxssl.data.builders import super_glue

BUILDERS = (corpus.JaxsslCorpus, sentiment.JaxsslSentiment, sentiment_zh.JaxsslSentimentZh,
            pos.JaxsslPos, paraphrase.JaxsslParaphrase, squad.JaxsslQa, sequences.JaxsslSequences,
            super_glue.JaxsslSuperGlue)

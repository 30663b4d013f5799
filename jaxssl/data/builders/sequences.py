"""Classification of sequences that are not language: the TFDS dataset ``jaxssl_sequences``.

Each example is a ``sequence`` of symbols (DNA bases, amino acids, melodic intervals) and a
class ``label``;
``jaxssl.data.sequence_words`` turns the symbols into words before tokenization (the
cross-disciplinary experiment of ``jaxssl.analysis.beyond_language``). Files, licences and
counts are in tasks/PROVENANCE.md. Every file holds distinct sequences (duplicates, and a
sequence given two labels, were dropped when it was made), so no sequence is in two splits.

``essen`` ships nothing: its folk songs are read from the installed music21 package's corpus
(non-commercial licence) when the dataset is prepared (about 2,300 tunes, minutes of parsing).
"""

import dataclasses
import hashlib

import tensorflow_datasets as tfds

from jaxssl.data.builders import shipped


@dataclasses.dataclass(eq=False)
class SequencesConfig(tfds.core.BuilderConfig):
  file: str = ""  # name of tasks/<file>.jsonl.xz
  labels: tuple[str, ...] = ()
  # Held-out fractions by split (the rest is train), chosen by a hash of the id; a file whose
  # records carry their own "split" keeps it, and validation comes out of its train split.
  held_out: tuple[tuple[str, float], ...] = ()
  # Read from music21's Essen folk-song corpus instead of a file: (label, its .abc files).
  music21_files: tuple[tuple[str, tuple[str, ...]], ...] = ()


class JaxsslSequences(shipped.ArrayRecordBuilder):
  """Non-language sequences with class labels.

  - ``splice``: 3,000 primate gene sequences of 60 nucleotides around a splice junction: EI
    (exon → intron, donor), IE (intron → exon, acceptor) or N (neither). UCI "Molecular Biology
    (Splice-junction Gene Sequences)", via R's mlbench (``DNA``), CC BY 4.0.
  - ``promoters``: 106 E. coli sequences of 57 nucleotides, promoter or not. UCI "Molecular
    Biology (Promoter Gene Sequences)", via R's kernlab (``promotergene``), CC BY 4.0.
  - ``malonylation``: 10,576 protein windows of 31 residues ("-" past a protein's end) centred
    on a lysine, a malonylation site or not; iLearnPlus's example data (MIT), with its own
    train/test split.
  - ``essen``: folk-song melodies from China (Essen's han1, han2) or Germany (Erk's collection:
    erk5, erk10, erk20), each as the sequence of intervals between consecutive notes
    (``intervals``), read from the installed music21 corpus.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SequencesConfig(
          name="splice",
          description="DNA splice junctions (EI/IE/N), 3,000 distinct sequences of 60 nt.",
          file="splice_dna",
          labels=("EI", "IE", "N"),
          held_out=(("test", 0.15), ("validation", 0.15))),
      SequencesConfig(
          name="promoters",
          description="E. coli promoters vs non-promoters, 106 sequences of 57 nt.",
          file="promoters_dna",
          labels=("non_promoter", "promoter"),
          held_out=(("test", 0.2), ("validation", 0.2))),
      SequencesConfig(
          name="malonylation",
          description="Lysine malonylation sites vs other lysines, 31-residue protein windows.",
          file="malonylation_protein",
          labels=("non_site", "site"),
          held_out=(("validation", 0.1),)),
      SequencesConfig(
          name="essen",
          description="Chinese vs German folk-song melodies as interval sequences (music21).",
          labels=("china", "germany"),
          held_out=(("test", 0.15), ("validation", 0.15)),
          music21_files=(("china", ("han1", "han2")), ("germany", ("erk5", "erk10", "erk20")))),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "sequence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=self.builder_config.labels),
    })
    return self.dataset_info_from_configs(features=features, supervised_keys=("sequence", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the sequences ship with the package
    if self.builder_config.music21_files:
      records = essen_records(self.builder_config.music21_files)
    else:
      records = shipped.read_records(shipped.TASKS_DIR / f"{self.builder_config.file}.jsonl.xz")
    for record in records:
      record.setdefault("id", sequence_id(record["sequence"]))
    held_out = dict(self.builder_config.held_out)
    by_split = {}  # a record's own split, train if it has none
    for record in records:
      by_split.setdefault(record.get("split", "train"), []).append(record)
    train = by_split.pop("train")
    splits = {**by_split, **shipped.split_by_hash(train, held_out)}
    return {split: self._generate_examples(chosen) for split, chosen in splits.items()}

  def _generate_examples(self, records):
    for record in records:
      yield record["id"], {
          "id": record["id"],
          "sequence": record["sequence"],
          "label": record["label"]
      }


def intervals(midi_pitches) -> str:
  """A melody's intervals between consecutive notes, in semitones clipped to -12..12, as the
  letters a..y (a: an octave or more down, m: a repeated note, y: an octave or more up)."""
  steps = [max(-12, min(12, b - a)) for a, b in zip(midi_pitches, midi_pitches[1:])]
  return "".join(chr(ord("a") + step + 12) for step in steps)


def essen_records(files_by_label):
  """[{"sequence", "label"}] of the Essen tunes in music21's corpus, each label's files in turn:
  distinct interval sequences of at least 8 intervals; one seen under two labels is dropped."""
  try:
    from music21 import corpus  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError("jaxssl_sequences/essen reads folk songs from the music21 corpus: "
                     "pip install music21") from None
  labels = {}
  for label, files in files_by_label:
    for name in files:
      for score in corpus.parse(f"essenFolksong/{name}").scores:
        sequence = intervals([n.pitch.midi for n in score.recurse().notes if n.isNote])
        if len(sequence) >= 8:
          labels.setdefault(sequence, set()).add(label)
  return [{"sequence": q, "label": ls.pop()} for q, ls in labels.items() if len(ls) == 1]


def sequence_id(sequence: str) -> str:
  """A sequence's id: the first 16 hex digits of the SHA-256 of its symbols."""
  return hashlib.sha256(sequence.encode("utf-8")).hexdigest()[:16]

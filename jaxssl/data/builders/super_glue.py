"""``jaxssl_super_glue``: TFDS's ``super_glue`` (the same configs, downloads and examples)
prepared without TensorFlow.

TFDS's own builder declares its integer features (``idx``, WiC's character offsets, WSC's word
indices) as ``tf.int32``, which imports TensorFlow the moment its features are built, even to
read prepared array_record files. This subclass builds them with numpy's int32, the same TFDS
feature, and changes nothing else.
"""

from unittest import mock

import numpy as np
from tensorflow_datasets.text import super_glue


class JaxsslSuperGlue(super_glue.SuperGlue):
  """SuperGLUE's tasks as ``jaxssl_super_glue/<config>``: boolq, cb, copa, multirc, record, rte,
  wic, wsc, wsc.fixed, axb, axg (``super_glue.SuperGlue.BUILDER_CONFIGS``)."""

  def _info(self):
    with mock.patch.object(super_glue, "tf", np):  # tf.int32 -> np.int32
      return super()._info()

"""A tiny TFDS dataset in MNIST's feature layout, preparable without TensorFlow.

It lives in an importable module (TFDS refuses builders defined in ``__main__``). Images
are stored as raw bytes (``encoding="bytes"``), which needs no TensorFlow to encode or
decode; the test prepares it as array_record in a temporary directory and reads it back
with TFDS's stock ``data_source`` API.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN, NUM_TEST = 12, 5


def example(split: str, i: int):
    """Deterministic example ``i`` of ``split``: a constant image and label ``i % 10``."""
    offset = 0 if split == "train" else 100
    image = np.full((28, 28, 1), (offset + i) % 256, np.uint8)
    return image, i % 10


class TinyMnist(tfds.core.GeneratorBasedBuilder):
    """MNIST-shaped images and labels, a handful of them."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                              encoding="bytes"),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples("train", NUM_TRAIN),
                "test": self._generate_examples("test", NUM_TEST)}

    def _generate_examples(self, split, n):
        for i in range(n):
            image, label = example(split, i)
            yield f"{split}-{i}", {"image": image, "label": label}

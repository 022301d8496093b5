"""A site's masked input on the wire: a safetensors file of uint64 tensors, one per segment of
shape ``segment.shape + (limbs,)``, with a ``MaskedHeader`` as its ``oncofed`` header entry.
Every bit pattern of a masked limb is valid, so checking a file reads only its header."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from oncofed.privacy.secagg.layout import Layout
from oncofed.privacy.secagg.ring import chunks
from oncofed.wire.secagg import MaskedHeader
from oncofed.wire.stream import Shapes, TensorFile, TensorWriter

DTYPE = "U64"


def masked_shapes(layout: Layout) -> Shapes:
    """Each segment's tensor shape on the wire: its own shape plus the limbs."""
    return {name: (*segment.shape, segment.limbs) for name, segment in layout.items()}


def encode_masked(masked: Mapping[str, np.ndarray], layout: Layout, header: MaskedHeader) -> bytes:
    """The safetensors payload of a masked input (as ``SecAggClient.mask`` returns it)."""
    buffer = io.BytesIO()
    writer = TensorWriter(buffer, masked_shapes(layout), header, DTYPE)
    for name in layout:
        writer.write(name, 0, masked[name].reshape(-1))
    writer.finish()
    return buffer.getvalue()


class MaskedFile:
    """An open masked input whose names, shapes, dtype and header have been checked."""

    def __init__(self, source: Path | bytes, layout: Layout) -> None:
        self._tensors, self._layout = TensorFile(source), layout
        try:
            self._tensors.check(masked_shapes(layout), DTYPE)
            self.header = self._tensors.meta(MaskedHeader)
        except BaseException:
            self._tensors.close()
            raise

    def __enter__(self) -> MaskedFile:
        return self

    def __exit__(self, *_: object) -> None:
        self._tensors.close()

    def pieces(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(segment, first element, (m, limbs) limbs)``, in layout order, ~8 MiB each."""
        for name, segment in self._layout.items():
            for start, stop in chunks(segment):
                count = (stop - start) * segment.limbs
                flat = self._tensors.read(name, start * segment.limbs, count)
                yield name, start, flat.reshape(-1, segment.limbs)


def check_masked(source: Path | bytes, layout: Layout) -> MaskedHeader:
    """Names, shapes and dtype against ``layout``, and the header; reads only the header."""
    with MaskedFile(source, layout) as masked:
        return masked.header

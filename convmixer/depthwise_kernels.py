"""The Triton kernels of convmixer.depthwise: the depthwise conv and its weight gradient, each loading an input tile
with its halo once and computing every tap from it (its input gradient is the conv kernel run on the gradient).

Design. A program owns a tile of TILE_H x TILE_W output pixels and BLOCK_C channels of one image. It loads the
input region those pixels read (the tile grown by K - 1 pixels, clipped to the image, so at most
min(TILE_H + K - 1, H) x min(TILE_W + K - 1, W) pixels) once from global memory into registers, then computes all
K*K taps from it: tap (i, j) is a `tl.gather` of the region at each pixel's shifted index (on the GPU through
shared memory), masked where the tap falls outside the image, times that tap's weights (K*K vectors of BLOCK_C,
read from a (K*K, C) fp32 copy of the weights that stays in cache). The weight gradient loads the same region and
the gradient's tile once per (image, tile) pair, and for every tap adds the sum over the tile's pixels of
gradient x shifted input to its slot's row of a fp32 buffer, partial[slot, tap, c]: the reduction runs over
images x pixels with all taps per program, each slot taking every slots-th (image, tile) pair, and the slots
(about min(N, what fits in a quarter of x's bytes)) are summed on the host, the second stage. Deterministic: each
slot has one writer, which adds in a fixed order. With a bias it also sums the gradient
itself, the bias gradient, from the tile it already holds. Every kernel reads and writes through strides (NCHW
and channels_last without a copy) and accumulates in fp32 whatever the tensors' dtype.

Bytes moved (the prediction the GPU sitting compares with; A = N*C*H*W*itemsize, one activation):
- forward: read x, write y: 2A (+ the halo re-read by neighbouring tiles, from L2: (halo area / tile area) - 1
  of A, e.g. 0.56 for 16x16 tiles at k=5);
- input gradient: read the output gradient, write the input gradient: 2A (the same kernel);
- weight gradient (+ bias gradient): read x and the output gradient: 2A (+ x's halo), plus the partial buffer,
  slots * (K*K + 1) * C * 4 bytes, zeroed, added to in L2 and summed once: at most A/4 + 1 MiB by construction.
So 6A for forward + backward, against the 5A of the byte floor (a fused backward would read the gradient once).
FLOPs: 2 * K*K * N*C*H*W per direction, none wasted (each tap is computed for the tile's pixels only).

Only triton.language builtins are used (`tl.reduce` with the standard sum combine, not `tl.sum`, which is itself
jitted when triton is first imported): depthwise.py loads this module once per mode, compiled or under Triton's
interpreter (TRITON_INTERPRET=1, how the tests run it on a CPU), and `triton.jit` decides the mode as it decorates.
"""

import triton
import triton.language as tl


@triton.jit
def load_region(x, c, c_ok, h0, w0, pad, H, W, sxc, sxh, sxw,
                HALO_H: tl.constexpr, HALO_W: tl.constexpr, HALO: tl.constexpr):  # fmt: skip
    """The input pixels a tile at (h0, w0) reads, clipped to the image: (HALO, BLOCK_C) in x's dtype, row-major
    over a HALO_H x HALO_W window whose top left pixel is (top, left); zero beyond the window or the image."""
    top = tl.maximum(h0 - pad, 0)
    left = tl.maximum(w0 - pad, 0)
    q = tl.arange(0, HALO)
    row = top + q // HALO_W
    col = left + q % HALO_W
    ok = (q < HALO_H * HALO_W) & (row < H) & (col < W)
    offsets = c[None, :] * sxc + row[:, None] * sxh + col[:, None] * sxw
    return tl.load(x + offsets, mask=ok[:, None] & c_ok[None, :], other=0.0), top, left


@triton.jit
def tap_pixels(region, index, ok, TILE: tl.constexpr, BLOCK_C: tl.constexpr):
    """The region's pixels at `index` (one per tile pixel, every channel), in fp32; zero where not `ok` (the tap
    falls outside the image, where the region holds nothing)."""
    pixels = tl.gather(region, tl.broadcast_to(tl.where(ok, index, 0)[:, None], (TILE, BLOCK_C)), 0)
    return tl.where(ok[:, None], pixels.to(tl.float32), 0.0)


@triton.jit
def conv(x, w, b, y, C, H, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw, pad,
         K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
         BLOCK_C: tl.constexpr, HALO_H: tl.constexpr, HALO_W: tl.constexpr, HALO: tl.constexpr):  # fmt: skip
    """y[n, c, h, w] = b[c] + sum over taps (i, j) of w[i*K + j, c] * x[n, c, h + i - pad, w + j - pad] (zero
    outside). Grid: (tiles of the image, images, channel blocks)."""
    tiles_w = (W + TILE_W - 1) // TILE_W
    h0 = tl.program_id(0) // tiles_w * TILE_H
    w0 = tl.program_id(0) % tiles_w * TILE_W
    n = tl.program_id(1).to(tl.int64)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    region, top, left = load_region(x + n * sxn, c, c_ok, h0, w0, pad, H, W, sxc, sxh, sxw, HALO_H, HALO_W, HALO)
    p = tl.arange(0, TILE_H * TILE_W)
    h = h0 + p // TILE_W
    col = w0 + p % TILE_W
    acc = tl.full((TILE_H * TILE_W, BLOCK_C), 0.0, tl.float32)
    for i in range(K):
        row = h + (i - pad)
        row_ok = (row >= 0) & (row < H)
        row_at = (row - top) * HALO_W - left  # the region's index of (row, 0)
        for j in range(K):
            cols = col + (j - pad)
            pixels = tap_pixels(region, row_at + cols, row_ok & (cols >= 0) & (cols < W), TILE_H * TILE_W, BLOCK_C)
            acc += pixels * tl.load(w + (i * K + j) * C + c, mask=c_ok, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(b + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    offsets = n * syn + c[None, :] * syc + h[:, None] * syh + col[:, None] * syw
    tl.store(y + offsets, acc.to(y.dtype.element_ty), mask=((h < H) & (col < W))[:, None] & c_ok[None, :])


@triton.jit
def weight_grad(x, g, partial, N, C, H, W, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, pad,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                BLOCK_C: tl.constexpr, HALO_H: tl.constexpr, HALO_W: tl.constexpr, HALO: tl.constexpr):  # fmt: skip
    """partial[slot, i*K + j, c] += sum over the slot's (image, tile) pairs and their pixels of g[n, c, h, w] *
    x[n, c, h + i - pad, w + j - pad]; row K*K gets the sum of g (the bias gradient) when HAS_BIAS. Grid: (slots,
    channel blocks); slot s takes the pairs s, s + slots, s + 2 slots, ... of the N x tiles. `partial` starts at 0."""
    tiles_w = (W + TILE_W - 1) // TILE_W
    tiles = (H + TILE_H - 1) // TILE_H * tiles_w
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    p = tl.arange(0, TILE_H * TILE_W)
    out = partial + tl.program_id(0).to(tl.int64) * ((K * K + HAS_BIAS) * C) + c
    for pair in range(tl.program_id(0), N * tiles, tl.num_programs(0)):
        n = (pair // tiles).to(tl.int64)
        h0 = pair % tiles // tiles_w * TILE_H
        w0 = pair % tiles % tiles_w * TILE_W
        h = h0 + p // TILE_W
        col = w0 + p % TILE_W
        region, top, left = load_region(x + n * sxn, c, c_ok, h0, w0, pad, H, W, sxc, sxh, sxw, HALO_H, HALO_W, HALO)
        at = n * sgn + c[None, :] * sgc + h[:, None] * sgh + col[:, None] * sgw
        grads = tl.load(g + at, mask=((h < H) & (col < W))[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
        for i in range(K):
            row = h + (i - pad)
            row_ok = (row >= 0) & (row < H)
            row_at = (row - top) * HALO_W - left
            for j in range(K):
                cols = col + (j - pad)
                ok = row_ok & (cols >= 0) & (cols < W)
                pixels = tap_pixels(region, row_at + cols, ok, TILE_H * TILE_W, BLOCK_C)
                total = tl.reduce(pixels * grads, 0, tl.standard._sum_combine)
                tl.atomic_add(out + (i * K + j) * C, total, mask=c_ok, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(out + K * K * C, tl.reduce(grads, 0, tl.standard._sum_combine), mask=c_ok, sem="relaxed")

"""The Triton kernels of convmixer.depthwise: the depthwise conv and its weight gradient, each loading an input tile
with its halo once and computing every tap from it (its input gradient is the conv kernel run on the gradient).

Design. A program owns a tile of TILE_H x TILE_W output pixels and BLOCK_C channels of one image. It loads the
input region those pixels read (the tile grown by K - 1 pixels, clipped to the image, so at most
min(TILE_H + K - 1, H) x min(TILE_W + K - 1, W) pixels) once from global memory, then computes all K*K taps from
it: for each kernel row i, TAPS taps (j, j + 1, ...; up to 4) at a time are one `tl.gather` of the region at every
pixel's shifted indices (on the GPU through shared memory, where each gather first stores the region: K *
ceil(K / TAPS) stores of it per tile, not K*K), masked where a tap falls outside the image, times those taps'
weights (read from a (K*K, C) fp32 copy of the weights, which stays in cache). The weight gradient loads the same
region and the gradient's tile once per (image, tile) pair, and for every tap adds the sum over the tile's pixels
of gradient x shifted input to its slot's row of a fp32 buffer, partial[slot, tap, c]: the reduction runs over
images x pixels with all taps per program, each slot taking every slots-th (image, tile) pair, and the slots
(min(N, what fits in max(1 MiB, a quarter of x's bytes))) are summed on the host, the second stage.
Deterministic: each slot has one writer, which adds in a fixed order. With a bias it also sums the gradient
itself, the bias gradient, from the tile it already holds. Every kernel reads and writes through strides (NCHW
and channels_last without a copy) and accumulates in fp32 whatever the tensors' dtype.

Bytes moved (the prediction the GPU sitting compares with; A = N*C*H*W*itemsize, one activation):
- forward: read x, write y: 2A, plus the halo neighbouring tiles read again (from L2 mostly): (region area /
  tile area) - 1 of A, e.g. 0.56 for 16x16 tiles at k=5 on a large image, 0 where one tile covers the image;
- input gradient: read the output gradient, write the input gradient: 2A (the same kernel);
- weight gradient (+ bias gradient): read x and the output gradient: 2A (+ x's halo), plus the partial buffer,
  slots * (K*K + 1) * C * 4 bytes, zeroed, added to in L2 and summed once: at most A/4 + 1 MiB by construction.
So 6A for forward + backward, against the 5A of the byte floor (a fused backward would read the gradient once).
FLOPs: 2 * K*K * N*C*H*W per direction; the gathers pad a row's K taps to a multiple of TAPS with masked zeros,
so the FMAs issued are ceil(K / TAPS) * TAPS / K of those: 1.33x at k=3, 1.6x at k=5, 1.14x at k=7, 1.33x at k=9,
1.07x at k=15, 1.03x at k=31.

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
def tap_pixels(region, h, col, top, left, i, j0, pad, H, W, K: tl.constexpr, HALO_W: tl.constexpr,
               TILE: tl.constexpr, TAPS: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """x[h + i - pad, col + j - pad] for every tile pixel (h, col) and the TAPS taps j = j0, j0 + 1, ... of row i:
    (TILE, TAPS, BLOCK_C) in fp32, gathered from the region in one go; zero where the tap falls outside the image
    (where the region holds nothing) or j >= K."""
    row = h + (i - pad)
    j = j0 + tl.arange(0, TAPS)
    cols = col[:, None] + (j - pad)[None, :]
    ok = ((row >= 0) & (row < H))[:, None] & (j < K)[None, :] & (cols >= 0) & (cols < W)
    index = tl.where(ok, ((row - top) * HALO_W - left)[:, None] + cols, 0)  # inside the region wherever ok
    index = tl.broadcast_to(tl.reshape(index, (TILE * TAPS, 1)), (TILE * TAPS, BLOCK_C))
    pixels = tl.reshape(tl.gather(region, index, 0), (TILE, TAPS, BLOCK_C)).to(tl.float32)
    return tl.where(ok[:, :, None], pixels, 0.0)


@triton.jit
def conv(x, w, b, y, C, H, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw, pad,
         K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
         BLOCK_C: tl.constexpr, TAPS: tl.constexpr, HALO_H: tl.constexpr, HALO_W: tl.constexpr,
         HALO: tl.constexpr):  # fmt: skip
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
        for j0 in range(0, K, TAPS):
            pixels = tap_pixels(region, h, col, top, left, i, j0, pad, H, W, K, HALO_W, TILE_H * TILE_W, TAPS,
                                BLOCK_C)  # fmt: skip
            j = j0 + tl.arange(0, TAPS)
            taps = tl.load(w + (i * K + j)[:, None] * C + c[None, :], mask=(j < K)[:, None] & c_ok[None, :], other=0.0)
            acc += tl.reduce(pixels * taps[None, :, :], 1, tl.standard._sum_combine)
    if HAS_BIAS:
        acc += tl.load(b + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    offsets = n * syn + c[None, :] * syc + h[:, None] * syh + col[:, None] * syw
    tl.store(y + offsets, acc.to(y.dtype.element_ty), mask=((h < H) & (col < W))[:, None] & c_ok[None, :])


@triton.jit
def weight_grad(x, g, partial, N, C, H, W, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, pad,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                BLOCK_C: tl.constexpr, TAPS: tl.constexpr, HALO_H: tl.constexpr, HALO_W: tl.constexpr,
                HALO: tl.constexpr):  # fmt: skip
    """partial[slot, i*K + j, c] += sum over the slot's (image, tile) pairs and their pixels of g[n, c, h, w] *
    x[n, c, h + i - pad, w + j - pad]; row K*K gets the sum of g (the bias gradient) when HAS_BIAS. Grid: (slots,
    channel blocks); slot s takes the pairs s, s + slots, s + 2 slots, ... of the N x tiles. `partial` starts at 0."""
    tiles_w = (W + TILE_W - 1) // TILE_W
    tiles = (H + TILE_H - 1) // TILE_H * tiles_w
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    p = tl.arange(0, TILE_H * TILE_W)
    out = partial + tl.program_id(0).to(tl.int64) * ((K * K + HAS_BIAS) * C) + c[None, :]
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
            for j0 in range(0, K, TAPS):
                pixels = tap_pixels(region, h, col, top, left, i, j0, pad, H, W, K, HALO_W, TILE_H * TILE_W, TAPS,
                                    BLOCK_C)  # fmt: skip
                j = j0 + tl.arange(0, TAPS)
                sums = tl.reduce(pixels * grads[:, None, :], 0, tl.standard._sum_combine)
                tl.atomic_add(
                    out + (i * K + j)[:, None] * C, sums, mask=(j < K)[:, None] & c_ok[None, :], sem="relaxed"
                )
        if HAS_BIAS:
            sums = tl.reduce(grads, 0, tl.standard._sum_combine)[None, :]
            tl.atomic_add(out + K * K * C, sums, mask=c_ok[None, :], sem="relaxed")

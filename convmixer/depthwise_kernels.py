"""The Triton kernels of convmixer.depthwise: the depthwise conv and its weight gradient (its input gradient is the
conv kernel run on the gradient, with the kernel flipped).

Design. A program owns a tile of TILE_H x TILE_W output pixels and BLOCK_C channels of one image, held as a 3-D
block (rows, columns, channels) whose row, column and channel coordinates stay separate and broadcast, so a tap
costs each pixel one address add, one mask and one FMA. It reads the input region the tile needs (the tile and its
halo of K - 1 pixels) from DRAM once, into the SM's L1 cache, and computes all K*K taps from there: each tap is a
load of the region shifted by the tap, served by L1, vectorised along the contiguous axis (channels in
channels_last, pixels in NCHW), masked outside the image, times that tap's weights (a (K*K, C) fp32 copy that stays
in cache). Triton gives no explicit shared memory; `tl.gather` from a region held in registers, the other way to
reuse it, compiles to warp shuffles. Counted in the innermost loop of the sm_90 code (`python -m benchmarks.kernels
--sass`; bf16, channels_last, k=5), a tap costs a pixel-channel 3.8 instructions here (one of them the bf16
unpack), 14-32 (2.5-8 of them shuffles) in the gather design (commit 750210e) and 14.6 in the kernel this replaced
(commit 3189146), whose
flattened pixels cost every tap four compares and a full address per pixel, unvectorised, and whose weight
gradient ran a program per tap.

The weight gradient loads the gradient's tile once per (image, tile) pair and, for every tap, adds the sum over the
tile's pixels of gradient x shifted input to its slot's row of a fp32 buffer, partial[slot, tap, c]: the reduction
runs over images x pixels with all taps per program, each slot taking every slots-th (image, tile) pair, and the
slots (one per image and 16x16 tile, at most what fits in max(1 MiB, a quarter of x's bytes)) are summed on the
host, the second stage.
Deterministic: each slot has one writer, which adds in a fixed order. With a bias it also sums the gradient itself,
the bias gradient, from the tile it already holds. The per-tap sum crosses threads, a fixed cost per tap that
larger tiles spread over more pixels (7.4-7.9 instructions per tap and pixel-channel at 32 per thread, 10.8 at 16).
Every kernel reads and writes through strides (NCHW and channels_last without a copy) and accumulates in fp32
whatever the tensors' dtype.

Bytes moved (the prediction the GPU sitting compares with; A = N*C*H*W*itemsize, one activation):
- forward: read x, write y: 2A from DRAM, plus the halo neighbouring tiles read again, from L2 mostly: (region
  area / tile area) - 1 of A, e.g. 0.56 for 16x16 tiles at k=5 on a large image;
- input gradient: read the output gradient, write the input gradient: 2A (the same kernel);
- weight gradient (+ bias gradient): read x and the output gradient: 2A (+ x's halo), plus the partial buffer,
  slots * (K*K + 1) * C * 4 bytes, zeroed, added to in L2 and summed once: at most A/4 + 1 MiB by construction.
So 6A for forward + backward, against the 5A of the byte floor (a fused backward would read the gradient once).
L1 serves K*K loads per pixel-channel: at k >= 5 that, and the 2*K*K FLOPs per pixel-channel per direction, not
DRAM, bound the kernels.

Only triton.language builtins are used (`tl.reduce` with the standard sum combine, not `tl.sum`; `tl.full`, not
`tl.zeros`: those are jitted when triton is first imported): depthwise.py loads this module once per mode, compiled
or under Triton's interpreter (TRITON_INTERPRET=1, how the tests run it on a CPU), and `triton.jit` decides the
mode as it decorates.
"""

import triton
import triton.language as tl


@triton.jit
def tile_coordinates(h0, w0, C, c0, TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """A tile's rows (TILE_H, 1, 1), columns (1, TILE_W, 1) and channels (1, 1, BLOCK_C), with the channel mask:
    kept apart and broadcast, so that the per-pixel work of a tap is one address add and one mask."""
    h = h0 + tl.arange(0, TILE_H)[:, None, None]
    col = w0 + tl.arange(0, TILE_W)[None, :, None]
    c = c0 + tl.arange(0, BLOCK_C)[None, None, :]
    return h, col, c, c < C


@triton.jit
def shifted(x_at, row_ok, col, j, pad, W, sxw):
    """x at (row, col + j - pad) for the tile's pixels, in fp32; zero outside the image. x_at points at each
    (row, col, channel) and row_ok masks the rows outside the image and the channels past C: a tap adds one scalar
    to the pointers and compares the columns with two scalars."""
    ok = row_ok & (col >= pad - j) & (col < W + pad - j)
    return tl.load(x_at + (j - pad) * sxw, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def conv(x, w, b, y, C, H, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw, pad, swt,
         K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
         BLOCK_C: tl.constexpr):  # fmt: skip
    """y[n, c, h, w] = b[c] + sum over taps (i, j) of w[i*K + j, c] * x[n, c, h + i - pad, w + j - pad] (zero
    outside); w's rows, swt apart, are zero-padded past C to whole channel blocks (read unmasked). Grid: (tiles of
    the image, images, channel blocks)."""
    tiles_w = (W + TILE_W - 1) // TILE_W
    h0 = tl.program_id(0) // tiles_w * TILE_H
    w0 = tl.program_id(0) % tiles_w * TILE_W
    n = tl.program_id(1).to(tl.int64)
    h, col, c, c_ok = tile_coordinates(h0, w0, C, tl.program_id(2) * BLOCK_C, TILE_H, TILE_W, BLOCK_C)
    acc = tl.full((TILE_H, TILE_W, BLOCK_C), 0.0, tl.float32)
    for i in range(K):
        row = h + (i - pad)
        row_ok = (row >= 0) & (row < H) & c_ok
        x_at = x + n * sxn + c * sxc + row * sxh + col * sxw
        for j in range(K):
            taps = tl.load(w + (i * K + j) * swt + c)
            acc += shifted(x_at, row_ok, col, j, pad, W, sxw) * taps
    if HAS_BIAS:
        acc += tl.load(b + c, mask=c_ok, other=0.0).to(tl.float32)
    offsets = n * syn + c * syc + h * syh + col * syw
    tl.store(y + offsets, acc.to(y.dtype.element_ty), mask=(h < H) & (col < W) & c_ok)


@triton.jit
def weight_grad(x, g, partial, N, C, H, W, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, pad,
                K: tl.constexpr, HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                BLOCK_C: tl.constexpr):  # fmt: skip
    """partial[slot, i*K + j, c] += sum over the slot's (image, tile) pairs and their pixels of g[n, c, h, w] *
    x[n, c, h + i - pad, w + j - pad]; row K*K gets the sum of g (the bias gradient) when HAS_BIAS. Grid: (slots,
    channel blocks); slot s takes the pairs s, s + slots, s + 2 slots, ... of the N x tiles. `partial` starts at 0."""
    tiles_w = (W + TILE_W - 1) // TILE_W
    tiles = (H + TILE_H - 1) // TILE_H * tiles_w
    c1 = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    out = partial + tl.program_id(0).to(tl.int64) * ((K * K + HAS_BIAS) * C) + c1
    for pair in range(tl.program_id(0), N * tiles, tl.num_programs(0)):
        n = (pair // tiles).to(tl.int64)
        h0 = pair % tiles // tiles_w * TILE_H
        w0 = pair % tiles % tiles_w * TILE_W
        h, col, c, c_ok = tile_coordinates(h0, w0, C, tl.program_id(1) * BLOCK_C, TILE_H, TILE_W, BLOCK_C)
        at = n * sgn + c * sgc + h * sgh + col * sgw
        grads = tl.load(g + at, mask=(h < H) & (col < W) & c_ok, other=0.0).to(tl.float32)
        for i in range(K):
            row = h + (i - pad)
            row_ok = (row >= 0) & (row < H) & c_ok
            x_at = x + n * sxn + c * sxc + row * sxh + col * sxw
            for j in range(K):
                products = shifted(x_at, row_ok, col, j, pad, W, sxw) * grads
                total = tl.reduce(tl.reduce(products, 0, tl.standard._sum_combine), 0, tl.standard._sum_combine)
                tl.atomic_add(out + (i * K + j) * C, total, mask=c1 < C, sem="relaxed")
        if HAS_BIAS:
            total = tl.reduce(tl.reduce(grads, 0, tl.standard._sum_combine), 0, tl.standard._sum_combine)
            tl.atomic_add(out + K * K * C, total, mask=c1 < C, sem="relaxed")

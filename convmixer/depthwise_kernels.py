"""The Triton kernels of convmixer.depthwise (which jits them on first use): plain functions of triton.language,
so that the same code runs compiled on a GPU or in Triton's interpreter on the CPU (TRITON_INTERPRET=1)."""

import triton.language as tl


def forward(x, w, b, y, C, H, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw, pad,
                   K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_HW: tl.constexpr,
                   BLOCK_C: tl.constexpr):  # fmt: skip
    """y[n, c, h, w] = b[c] + sum over (i, j) of w[c, i, j] * x[n, c, h + i - pad, w + j - pad] (zero outside)."""
    n = tl.program_id(0).to(tl.int64)
    hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    h, col = hw // W, hw % W
    hw_ok, c_ok = hw < H * W, c < C
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for i in range(K):
        row = h + i - pad
        row_ok = hw_ok & (row >= 0) & (row < H)
        for j in range(K):
            cols = col + j - pad
            ok = row_ok & (cols >= 0) & (cols < W)
            offsets = n * sxn + c[None, :] * sxc + row[:, None] * sxh + cols[:, None] * sxw
            pixels = tl.load(x + offsets, mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            taps = tl.load(w + c * (K * K) + i * K + j, mask=c_ok, other=0.0).to(tl.float32)
            acc += pixels * taps[None, :]
    if HAS_BIAS:
        acc += tl.load(b + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    offsets = n * syn + c[None, :] * syc + h[:, None] * syh + col[:, None] * syw
    tl.store(y + offsets, acc.to(y.dtype.element_ty), mask=hw_ok[:, None] & c_ok[None, :])


def weight_grad(x, g, partial, N, C, H, W, sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw, pad,
                       K: tl.constexpr, IMAGES: tl.constexpr, BLOCK_HW: tl.constexpr,
                       BLOCK_C: tl.constexpr):  # fmt: skip
    """partial[chunk, c, tap] = sum over this chunk's images and every pixel of g[n, c, h, w] * x[shifted by tap]."""
    tap, chunk = tl.program_id(0), tl.program_id(2)
    i, j = tap // K, tap % K
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    for image in range(IMAGES):
        n = (chunk * IMAGES + image).to(tl.int64)
        for start in range(0, H * W, BLOCK_HW):
            hw = start + tl.arange(0, BLOCK_HW)
            h, col = hw // W, hw % W
            row, cols = h + i - pad, col + j - pad
            here = (hw < H * W) & (n < N)
            ok = here & (row >= 0) & (row < H) & (cols >= 0) & (cols < W)
            x_at = n * sxn + c[None, :] * sxc + row[:, None] * sxh + cols[:, None] * sxw
            g_at = n * sgn + c[None, :] * sgc + h[:, None] * sgh + col[:, None] * sgw
            pixels = tl.load(x + x_at, mask=ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            grads = tl.load(g + g_at, mask=here[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            acc += pixels * grads
    tl.store(partial + (chunk * C + c) * (K * K) + tap, tl.sum(acc, axis=0), mask=c_ok)

# Issue #11's ops in one small vision-and-regression model: ConvNeXt-like blocks
# (LayerNorm2d, stochastic depth), GroupNorm, upsampling, padding, ReLU6 in place,
# chunk and split, sin/cos/exp, clamp, and a mean-squared-error loss.
use std

dim batch_size as B
dim channels   as C
dim image_size as S
dim blocks     as N

layer Block(c, p) {
    conv = Conv2d(c, c, 3, padding = 1, groups = c)
    norm = LayerNorm2d(c, 1e-6)
    pw   = Conv2d(c, 2 * c, 1)
    forward(x: [b, c, h, w]) -> [b, c, h, w] {
        a, g = chunk(pw(norm(conv(x))), 2, 1)             # a gated pointwise conv
        return x + drop_path(a * sigmoid(g), p)
    }
}

layer Head(c) {
    gn = GroupNorm(c)
    forward(x: [b, c, h, w]) -> [b, c, h, w] {
        return relu6_(clamp(gn(x), -4, 4))
    }
}

layer GroupNorm(c) {
    param weight: [c]
    param bias: [c]
    forward(x: [b, c, h, w]) -> [b, c, h, w] { return group_norm(x, weight, bias, 2) }
}

model NewOps {
    stem   = Conv2d(3, C, 3, padding = 1)
    blocks = repeat N of Block(C, 0.1)
    none   = repeat 0 of Block(C, 0.1)
    head   = Head(C)
    forward(images: [B, 3, S, S], target: [B, C, 2 * S + 2, 2 * S + 2]) {
        x = none(blocks(stem(images)))
        up = interpolate(head(x), 2, "bilinear")
        near = interpolate(x, 2)
        p, q = split(pad(up + near, 1, 1, 1, 1), S + 1, 2)
        waves = cat(sin(p) * cos(q), exp(clamp(q, max = 0)), dim = 2)
        return mse_loss(contiguous(waves), target)
    }
}

preset tiny { B = 2, C = 4, S = 4, N = 2 }

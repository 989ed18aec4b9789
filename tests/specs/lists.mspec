use std
dim batch_size as B = 2
dim d_model as D = 4
let depths = [2, 1]
let widths = [D, 2 * D]

layer Block(d) {
    lin = Linear(d, d)
    forward(x: [b, d]) { return relu(lin(x)) }
}

layer Stage(widths, k) {
    proj = Linear(widths[k - 1], widths[k])
    blocks = repeat depths[k] of Block(widths[k])
    forward(x: [b, w]) { return blocks(proj(x)) }
}

model M {
    first = repeat depths[0] of Block(widths[0])
    second = Stage(widths, 1)
    forward(x: [B, D], target: [B, widths[-1]]) {
        return mse_loss(second(first(x)), target)
    }
}

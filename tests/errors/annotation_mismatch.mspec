use std
dim batch_size as B
dim d_model as D
dim d_ff as F
model M {
    up = Linear(D, F)
    forward(x: [B, D]) {
        h = up(x) : [B, D]
        return h
    }
}

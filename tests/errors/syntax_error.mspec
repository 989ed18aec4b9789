use std
dim batch_size as B
model M {
    lin = Linear(B, B)
    forward(x: [B, B]) {
        return lin(x
    }
}

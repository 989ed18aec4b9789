use std
dim batch_size as B
dim d_model as D
model M {
    lin = Linear(D, D)
    forward(x: [B, D]) {
        return lin(soft_max(x))
    }
}

dim batch_size as B
dim d_model as D
model M {
    param w: [D]
    forward(x: [B, D]) {
        y = rearrange(x * 2, "b (h k) -> b h k")
        return y
    }
}

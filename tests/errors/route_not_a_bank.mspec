use std
dim tokens as T
dim d_model as D
model M {
    expert = Linear(D, D)
    forward(x: [T, D], w: [T, 2], sel: int64[T, 2]) { return route(expert, x, w, sel) }
}

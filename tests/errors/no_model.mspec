use std
dim d_model as D

# The PyTorch Quickstart NeuralNetwork (pytorch.org/tutorials, "Build the Neural Network"):
# nn.Flatten, then nn.Sequential(Linear 784 -> 512, ReLU, Linear 512 -> 512, ReLU,
# Linear 512 -> 10), biases everywhere; trained with cross-entropy on integer labels.
# Compile with:
#   memspec compile specs/mlp.mspec --format md --preset quickstart
use std

dim batch_size  as B
dim image_size  as I                   # the image side: 28 for FashionMNIST
dim d_ff        as F                   # the hidden width: 512
dim num_classes as C

# nn.Sequential's members are named 0..4 (the ReLUs hold the odd indices); a spec name
# must be an identifier, so the three Linears are fc1, fc2, fc3.
layer LinearReluStack(in_features, hidden, classes) {
    fc1 = Linear(in_features, hidden, bias = true)       # torch: linear_relu_stack.0
    fc2 = Linear(hidden, hidden, bias = true)            # torch: linear_relu_stack.2
    fc3 = Linear(hidden, classes, bias = true)           # torch: linear_relu_stack.4
    forward(x: [b, in_features]) -> [b, classes] {
        return fc3(relu(fc2(relu(fc1(x)))))
    }
}

model NeuralNetwork {
    linear_relu_stack = LinearReluStack(I * I, F, C)
    forward(images: [B, I, I], labels: int64[B]) {
        x = rearrange(images, "b h w -> b (h w)")             # nn.Flatten: a view
        logits = linear_relu_stack(x)                       : [B, C]
        return cross_entropy(logits, labels)
    }
}

# The tutorial's sizes; its DataLoader batch is 64.
preset quickstart { I = 28, F = 512, C = 10, B = 64 }

expect params == I*I*F + F + F*F + F + F*C + C
expect params == 669_706 at quickstart

assume "state_dict names linear_relu_stack.fc1, .fc2, .fc3 stand for the tutorial's linear_relu_stack.0, .2 and .4"
assume "Flatten is a view of the [B, I, I] input; ReLU is not in place (nn.ReLU()); no dropout"
assume "loss: nn.CrossEntropyLoss (mean over the batch) on int64 labels"

train { precision fp32; optimizer adamw; convention course }

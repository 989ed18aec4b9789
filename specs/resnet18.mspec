# ResNet-18 (torchvision resnet18): a 7x7/2 stem with BatchNorm, in-place ReLU and a 3x3/2
# max-pool, four stages of two BasicBlocks (widths 64/128/256/512; stages 2-4 start with
# stride 2 and a 1x1/2 conv + BN shortcut), global average pooling and a linear classifier.
use std

dim batch_size  as B
dim image_size  as I
dim num_classes as C

layer Downsample(cin, cout, stride) {
    conv = Conv2d(cin, cout, 1, stride, 0, false)        # torchvision: downsample.0
    bn   = BatchNorm2d(cout)                              # torchvision: downsample.1
    forward(x: [b, cin, h, w]) { return bn(conv(x)) }
}

layer BasicBlock(cin, cout, stride) {
    let has_downsample = stride != 1 or cin != cout
    conv1 = Conv2d(cin, cout, 3, stride, 1, false)
    bn1   = BatchNorm2d(cout)
    conv2 = Conv2d(cout, cout, 3, 1, 1, false)
    bn2   = BatchNorm2d(cout)
    if has_downsample { downsample = Downsample(cin, cout, stride) }
    forward(x: [b, cin, h, w]) {
        out = relu_(bn1(conv1(x)))                        # in place: one storage
        out = bn2(conv2(out))
        identity = x
        if has_downsample { identity = downsample(x) }
        return relu_(out + identity)
    }
}

layer Stage(cin, cout, stride) {
    first = BasicBlock(cin, cout, stride)                 # torchvision: layerK.0
    rest  = repeat 1 of BasicBlock(cout, cout, 1)         # torchvision: layerK.1
    forward(x: [b, cin, h, w]) { return rest(first(x)) }
}

model ResNet18 {
    conv1  = Conv2d(3, 64, 7, 2, 3, false)
    bn1    = BatchNorm2d(64)
    layer1 = Stage(64, 64, 1)
    layer2 = Stage(64, 128, 2)
    layer3 = Stage(128, 256, 2)
    layer4 = Stage(256, 512, 2)
    fc     = Linear(512, C, bias = true)
    forward(images: [B, 3, I, I], labels: int64[B]) {
        x = max_pool2d(relu_(bn1(conv1(images))), 3, 2, 1)
        x = layer4(layer3(layer2(layer1(x))))
        pooled = rearrange(global_avg_pool2d(x), "b c 1 1 -> b c")
        return cross_entropy(fc(pooled), labels)
    }
}

preset imagenet { I = 224, C = 1_000 }
expect params == 11_176_512 + 513 * C
expect params == 11_689_512 at imagenet
expect buffers == 9_620

assume "convolutions have no bias (BatchNorm follows); BatchNorm in training mode saves its input and per-channel mean and invstd"
assume "BatchNorm running_mean and running_var are float32 buffers, num_batches_tracked an int64 scalar buffer"
assume "ReLU in place: its output shares the BatchNorm output's (or the residual sum's) storage"
assume "spatial sizes are floor((H + 2p - k)/s) + 1 as in PyTorch; symbolic forms in I keep the floors"
assume "block names: layerK.first and layerK.rest.0 stand for torchvision's layerK.0 and layerK.1"

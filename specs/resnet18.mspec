# ResNet-18 (torchvision.models.resnet18, He et al., 2016): a 7x7/2 convolution stem
# with BatchNorm, in-place ReLU and a 3x3/2 max-pool; four stages of two BasicBlocks
# (widths 64/128/256/512; the first block of stages 2-4 has stride 2 and a 1x1/2
# convolution + BatchNorm on its shortcut); global average pooling and a linear
# classifier. Compile with:
#   memspec compile specs/resnet18.mspec --format md --preset imagenet --set B=1
use std

dim batch_size  as B
dim image_size  as I
dim num_classes as C

# torchvision's downsample is nn.Sequential(conv1x1, BatchNorm2d), members 0 and 1.
layer Downsample(in_planes, planes, stride) {
    conv = Conv2d(in_planes, planes, 1, stride, 0, false)        # torch: downsample.0
    bn   = BatchNorm2d(planes)                                    # torch: downsample.1
    forward(x: [b, in_planes, h, w]) {
        return bn(conv(x))
    }
}

# torchvision's BasicBlock (expansion 1); a shortcut projection where the shape changes.
layer BasicBlock(in_planes, planes, stride) {
    let has_downsample = stride != 1 or in_planes != planes
    conv1 = Conv2d(in_planes, planes, 3, stride, 1, false)
    bn1   = BatchNorm2d(planes)
    conv2 = Conv2d(planes, planes, 3, 1, 1, false)
    bn2   = BatchNorm2d(planes)
    if has_downsample { downsample = Downsample(in_planes, planes, stride) }
    forward(x: [b, in_planes, h, w]) {
        out = relu_(bn1(conv1(x)))                   # nn.ReLU(inplace=True): no new storage
        if has_downsample { return relu_(bn2(conv2(out)) + downsample(x)) }
        return relu_(bn2(conv2(out)) + x)
    }
}

# torchvision's layerK: nn.Sequential of two BasicBlocks, members 0 and 1. The two differ
# in layers 2-4 (stride and shortcut), so they are two named members, b0 and b1.
layer ResLayer(in_planes, planes, stride) {
    b0 = BasicBlock(in_planes, planes, stride)                   # torch: layerK.0
    b1 = BasicBlock(planes, planes, 1)                           # torch: layerK.1
    forward(x: [b, in_planes, h, w]) {
        return b1(b0(x))
    }
}

model ResNet18 {
    conv1  = Conv2d(3, 64, 7, 2, 3, false)
    bn1    = BatchNorm2d(64)
    layer1 = ResLayer(64, 64, 1)
    layer2 = ResLayer(64, 128, 2)
    layer3 = ResLayer(128, 256, 2)
    layer4 = ResLayer(256, 512, 2)
    fc     = Linear(512, C, bias = true)
    forward(images: [B, 3, I, I], labels: int64[B]) {
        x = max_pool2d(relu_(bn1(conv1(images))), 3, 2, 1)
        x = layer4(layer3(layer2(layer1(x))))
        pooled = rearrange(global_avg_pool2d(x), "b c 1 1 -> b c")   : [B, 512]
        logits = fc(pooled)                                           : [B, C]
        return cross_entropy(logits, labels)
    }
}

preset imagenet { I = 224, C = 1_000 }

# Convolutions: stem 3*49*64; layer1 4 * 9*64*64; layer2 9*64*128 + 3 * 9*128*128 +
# 64*128; layer3 and layer4 alike; BatchNorm weight and bias 2 * (64 + 4*64 + 5*128 +
# 5*256 + 5*512) = 9,600; fc 512 C + C.
expect params == 11_176_512 + 513 * C
expect params == 11_689_512 at imagenet
# running_mean and running_var of the 20 BatchNorms (9,600 floats), and 20 int64 counters.
expect buffers == 9_620

assume "convolutions have no bias (a BatchNorm follows each); fc has one"
assume "BatchNorm in training mode (batch statistics, running-stat update); running_mean and running_var are float32 buffers, num_batches_tracked an int64 scalar buffer"
assume "ReLU in place (nn.ReLU(inplace=True)): its output is its input's storage"
assume "the residual sum is out + identity, a new tensor, where torchvision adds in place (out += identity); autograd saves nothing for either add, so saved bytes are the same"
assume "global average pooling is adaptive_avg_pool2d to 1 x 1, then flattened to [B, 512] (a view)"
assume "spatial sizes are floor((H + 2 padding - kernel) / stride) + 1 as in PyTorch; symbolic forms in I keep the floors"
assume "state_dict names: layerK.b0 and layerK.b1 stand for torchvision's layerK.0 and layerK.1, downsample.conv and downsample.bn for downsample.0 and downsample.1"

train { precision fp32; optimizer adamw; convention course }

# A UNet in miniature: stride-2 convolutions down, nearest upsampling back up, and the
# skip concatenated at each level. The sizes line up only with `assume I % 4 == 0`:
# a stride-2 conv of I gives floor((I - 1)/2) + 1, which is I/2 when 2 divides I.
use std
dim batch_size as B
dim channels as C
dim image_size as I

layer Down(c_in, c_out) {
    conv = Conv2d(c_in, c_out, 3, stride = 2, padding = 1)
    forward(x: [b, c_in, h, w]) -> [b, c_out, h / 2, w / 2] { return relu(conv(x)) }
}

model TinyUNet {
    stem = Conv2d(3, C, 3, padding = 1)
    down1 = Down(C, 2 * C)
    down2 = Down(2 * C, 4 * C)
    up2 = Conv2d(4 * C + 2 * C, 2 * C, 3, padding = 1)
    up1 = Conv2d(2 * C + C, C, 3, padding = 1)
    head = Conv2d(C, 3, 1)
    forward(x: [B, 3, I, I], target: [B, 3, I, I]) {
        s0 = relu(stem(x))
        s1 = down1(s0)
        s2 = down2(s1)
        u2 = relu(up2(cat(interpolate(s2, 2), s1, dim = 1)))
        u1 = relu(up1(cat(interpolate(u2, 2), s0, dim = 1)))
        return mse_loss(head(u1), target)
    }
}
assume I % 4 == 0
preset tiny { B = 2, C = 4, I = 16 }

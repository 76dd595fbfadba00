"""Compare initializers on your own model: a small residual CNN with BatchNorm for CIFAR-10.

Copy this file, change ``build``, keep its signature. From the command line (one run per init):
    initsuite run --multirun model=custom model.builder=experiments.custom_resnet:build \
        activation=keep dataset=cifar10 init=he_normal,glorot_uniform,truncated_normal_tutorial train.max_steps=300
From Python (the same runs, then a one-line-per-run summary):
    python experiments/custom_resnet.py [more overrides, e.g. train.batch_size=64]
"""

import sys

import keras


def build(input_shape, num_classes, activation="relu", blocks=1, width=16):
    """ResNet-v1 for CIFAR (He et al. 2016): a 3x3 conv stem, three stages of ``blocks`` blocks
    [conv-BN-f-conv-BN + shortcut, then f] at width x1, x2, x4 (stride 2 between stages),
    global average pooling, Dense logits. The suite passes ``activation`` unless activation=keep."""
    def conv_bn(x, filters, stride, name):  # no conv bias: BatchNorm's beta plays that role
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
        return keras.layers.BatchNormalization(name=f"{name}_bn")(x)

    inputs = keras.Input(tuple(input_shape))
    x = keras.layers.Activation(activation, name="stem_act")(conv_bn(inputs, width, 1, "stem"))
    for stage in range(3):
        filters = width * 2 ** stage
        for b in range(blocks):
            name, stride = f"s{stage}b{b}", (2 if stage and not b else 1)
            h = keras.layers.Activation(activation, name=f"{name}_act1")(conv_bn(x, filters, stride, f"{name}_a"))
            h = conv_bn(h, filters, 1, f"{name}_b")
            if stride != 1 or x.shape[-1] != filters:  # projection shortcut (1x1 conv) when the shape changes
                x = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            x = keras.layers.Activation(activation, name=f"{name}_act2")(keras.layers.Add(name=f"{name}_add")([x, h]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x), name="small_resnet")


if __name__ == "__main__":
    from initsuite.sweep.api import compare, summary

    tables = compare("experiments.custom_resnet:build", inits=["he_normal", "glorot_uniform", "truncated_normal_tutorial"],
                     dataset="cifar10", steps=300, overrides=sys.argv[1:])
    print(summary(tables).to_string(index=False))

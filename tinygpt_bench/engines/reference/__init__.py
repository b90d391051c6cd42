"""The numpy reference (backend.py): the readable model, forward beside backward, in float64
('reference': the oracle every engine is checked against) or float32 ('reference-fp32')."""

from __future__ import annotations

from tinygpt_bench.engines.description import BackendSpec, Engine

ENGINE = Engine(
    name="reference",
    summary="the numpy reference: float64 (the oracle) and float32",
    backends=(
        BackendSpec("reference", ".backend:ReferenceBackend", "CPU", fixed={"dtype": "float64"},
                    faults=("nan-grad",), label="numpy float64 (the oracle)", oracle=True),
        BackendSpec("reference-fp32", ".backend:ReferenceBackend", "CPU", fixed={"dtype": "float32"},
                    faults=("nan-grad",), label="numpy float32"),
    ),
    loss_and_grad=".backend:loss_and_grad",
)

"""tinygpt-bench: WebGPU vs WebAssembly Memory64 training benchmarks of one small byte-level GPT."""

__version__ = "0.1.0"

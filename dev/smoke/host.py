import ctypes, threading, time, sys
import numpy as np
import wasmtime as wt
from wasmtime import _ffi as ffi

class SharedMem(wt.SharedMemory):
    def _as_extern(self):  # wasmtime-py issue 318 workaround
        union = ffi.wasmtime_extern_union(sharedmemory=self.ptr())
        return ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)

variant = sys.argv[1]
cfg = wt.Config()
for k in ("wasm_memory64", "wasm_threads", "shared_memory", "wasm_simd", "wasm_relaxed_simd", "wasm_bulk_memory"):
    setattr(cfg, k, True)
import os
if os.environ.get("RES"): cfg.memory_reservation = int(os.environ["RES"])
eng = wt.Engine(cfg)
mod = wt.Module.from_file(eng, f"smoke_{variant}.wasm")
for imp in mod.imports: print("import", imp.module, imp.name, imp.type.limits.min, imp.type.limits.max, imp.type.is_64, imp.type.is_shared)
mem = SharedMem(eng, wt.MemoryType(wt.Limits(16, 262144), is_64=True, shared=True))

def inst():
    s = wt.Store(eng)
    i = wt.Instance(s, mod, [mem])
    return s, i.exports(s)
s0, e0 = inst()
print("heap_base", e0["heap_base"](s0), "pages", e0["mem_pages"](s0), "len", mem.data_len())
buf = np.ctypeslib.as_array(ctypes.cast(mem.data_ptr(), ctypes.POINTER(ctypes.c_float)), (mem.data_len()//4,))
da = e0["data_addr"](s0)//4
buf[da:da+1024] = np.arange(1024, dtype=np.float32)
print("simd_sum", e0["simd_sum"](s0, e0["data_addr"](s0), 1024), np.arange(1024).sum())
sp0 = e0["__stack_pointer"].value(s0); print("main sp", sp0, "probe", e0["stack_probe"](s0, 1))
hb = e0["heap_base"](s0)
stacks = [hb + 65536*(i+1) for i in range(2)]
results = {}
def worker(tid):
    s, e = inst()
    e["__stack_pointer"].set_value(s, stacks[tid])
    results[("probe", tid)] = e["stack_probe"](s, 1)
    results[tid] = e["worker"](s, tid, 0)
ths = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
[t.start() for t in ths]
time.sleep(0.2)
print("probes", results)
# rounds: kick, wait; grow memory in between while workers are parked
t0 = time.perf_counter(); R = 200
for r in range(R):
    e0["kick"](s0, 0)
    e0["wait_done"](s0, 2*(r+1))
dt = (time.perf_counter()-t0)/R
print(f"fork-join round trip via python {dt*1e6:.1f} us")
before = mem.data_len()
old = e0["grow"](s0, 16384)   # +1 GiB from inside wasm while workers parked
print("grow from wasm: old pages", old, "len", before, "->", mem.data_len())
e0["kick"](s0, 0); e0["wait_done"](s0, 2*(R+1))
buf2 = np.ctypeslib.as_array(ctypes.cast(mem.data_ptr(), ctypes.POINTER(ctypes.c_float)), (mem.data_len()//4,))
print("workers wrote to grown memory:", buf2[-2:], "(expect [1,0])")
# grow past 4 GiB
old = e0["grow"](s0, 5*16384); print("grow to", mem.data_len()/2**30, "GiB, old", old)
e0["kick"](s0, 0); e0["wait_done"](s0, 2*(R+2))
buf3 = np.ctypeslib.as_array(ctypes.cast(mem.data_ptr(), ctypes.POINTER(ctypes.c_float)), (mem.data_len()//4,))
print("workers wrote past 4GiB:", buf3[-2:])
print("grow beyond max ->", e0["grow"](s0, 300000))
e0["kick"](s0, 1); [t.join() for t in ths]
print("rounds per worker", results[0], results[1])

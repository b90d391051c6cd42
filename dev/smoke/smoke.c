#include <wasm_simd128.h>
typedef unsigned long size_t;
extern unsigned char __heap_base;
static int gen __attribute__((aligned(64)));
static int done __attribute__((aligned(64)));
static int stop;
static float data[1024];
static size_t heap_top;

__attribute__((export_name("heap_base"))) size_t heap_base(void){ return (size_t)&__heap_base; }
__attribute__((export_name("mem_pages"))) size_t mem_pages(void){ return __builtin_wasm_memory_size(0); }
__attribute__((export_name("grow"))) long long grow(size_t pages){ return (long long)__builtin_wasm_memory_grow(0, pages); }
__attribute__((export_name("gen_addr"))) size_t gen_addr(void){ return (size_t)&gen; }
__attribute__((export_name("done_addr"))) size_t done_addr(void){ return (size_t)&done; }
__attribute__((export_name("data_addr"))) size_t data_addr(void){ return (size_t)data; }

__attribute__((export_name("simd_sum"))) float simd_sum(const float *p, int n){
  v128_t acc = wasm_f32x4_splat(0.f);
  for (int i = 0; i < n; i += 4) {
#ifdef RELAXED
    acc = wasm_f32x4_relaxed_madd(wasm_v128_load(p+i), wasm_f32x4_splat(1.f), acc);
#else
    acc = wasm_f32x4_add(acc, wasm_v128_load(p+i));
#endif
  }
  return wasm_f32x4_extract_lane(acc,0)+wasm_f32x4_extract_lane(acc,1)+wasm_f32x4_extract_lane(acc,2)+wasm_f32x4_extract_lane(acc,3);
}
/* uses the stack so a shared stack would collide */
__attribute__((export_name("stack_probe"))) size_t stack_probe(int x){ volatile int buf[64]; buf[x&63]=x; return (size_t)buf; }

/* worker: park on gen, on wake touch a high address (may be in grown memory), count done */
__attribute__((export_name("worker"))) int worker(int tid, size_t touch){
  int seen = __atomic_load_n(&gen, __ATOMIC_SEQ_CST);
  int rounds = 0;
  for (;;) {
    int g;
    while ((g = __atomic_load_n(&gen, __ATOMIC_SEQ_CST)) == seen)
      __builtin_wasm_memory_atomic_wait32(&gen, seen, -1);
    seen = g;
    if (__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) return rounds;
    rounds++;
    size_t limit = __builtin_wasm_memory_size(0) * 65536;
    volatile float *p = (volatile float*)(limit - 4*(tid+1));  /* last bytes of current memory */
    *p = (float)tid;
    __atomic_fetch_add(&done, 1, __ATOMIC_SEQ_CST);
    __builtin_wasm_memory_atomic_notify(&done, 1);
  }
}
__attribute__((export_name("kick"))) void kick(int st){
  if (st) __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&gen, 1, __ATOMIC_SEQ_CST);
  __builtin_wasm_memory_atomic_notify(&gen, -1);
}
__attribute__((export_name("wait_done"))) int wait_done(int target){
  int d;
  while ((d = __atomic_load_n(&done, __ATOMIC_SEQ_CST)) < target)
    __builtin_wasm_memory_atomic_wait32(&done, d, -1);
  return d;
}

/* A stand-in libcudart for tests on machines without a GPU: "device" memory is host memory, copies are
 * memcpy, streams and events are counters. Only the entry points the runtime's ctypes binding declares, with
 * CUDA's C signatures, plus fake_* probes the tests read. fake_fail_next_malloc() makes the next cudaMalloc
 * fail with cudaErrorMemoryAllocation (2), as a full GPU would. */
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

static long mallocs = 0, live = 0, host_mallocs = 0, host_live = 0, copies = 0, streams = 0, events = 0;
static long last_malloc_bytes = 0;
static int device = -1, fail_next = 0;

int cudaSetDevice(int d) { if (d < 0 || d > 7) return 101; device = d; return 0; }
int cudaMalloc(void **p, size_t n) {
    if (fail_next) { fail_next = 0; return 2; }
    *p = malloc(n ? n : 1); mallocs++; live++; last_malloc_bytes = (long)n; return 0;
}
int cudaFree(void *p) { if (p) { free(p); live--; } return 0; }
int cudaMallocHost(void **p, size_t n) { *p = malloc(n ? n : 1); host_mallocs++; host_live++; return 0; }
int cudaFreeHost(void *p) { if (p) { free(p); host_live--; } return 0; }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream) {
    if (kind != 1 && kind != 2) return 21; /* cudaErrorInvalidMemcpyDirection */
    memcpy(dst, src, n); copies++; return 0;
}
int cudaStreamCreate(void **s) { *s = (void *)(ptrdiff_t)(0x1000 + ++streams); return 0; }
int cudaStreamSynchronize(void *s) { return 0; }
int cudaStreamDestroy(void *s) { streams--; return 0; }
int cudaEventCreate(void **e) { *e = (void *)(ptrdiff_t)(0x2000 + ++events); return 0; }
int cudaEventRecord(void *e, void *s) { return 0; }
int cudaEventSynchronize(void *e) { return 0; }
int cudaEventDestroy(void *e) { events--; return 0; }
int cudaMemGetInfo(size_t *free_bytes, size_t *total) { *free_bytes = 6UL << 30; *total = 8UL << 30; return 0; }
int cudaRuntimeGetVersion(int *v) { *v = 11040; return 0; }
const char *cudaGetErrorName(int err) {
    switch (err) {
    case 2: return "cudaErrorMemoryAllocation";
    case 21: return "cudaErrorInvalidMemcpyDirection";
    case 101: return "cudaErrorInvalidDevice";
    default: return "cudaErrorUnknown";
    }
}
void fake_fail_next_malloc(void) { fail_next = 1; }
long fake_stat(int which) {
    long v[] = {mallocs, live, host_mallocs, host_live, copies, streams, events, device, last_malloc_bytes};
    return (which >= 0 && which < 9) ? v[which] : -1;
}

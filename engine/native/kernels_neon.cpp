// aarch64 Advanced SIMD (NEON) variant of the kernels (ISA flags come from CMakeLists.txt for this file only).
// 4-wide vectors like the x86 baseline, but aarch64 has 32 vector registers (SSE: 16), so the dense conv
// uses the wider register block of the 32-register AVX-512 variant (8 channels x 3 vectors = 24
// accumulators). Correctness is checked under qemu (make test-aarch64); its speed is unmeasured.
#define SK_NS isa_neon
#define SK_VW 4
#define SK_NAME "neon"
#define SK_OB 8
#define SK_NVD 3
#include "kernels_impl.inc"

// avx512 variant of the kernels (ISA flags come from CMakeLists.txt for this file only)
#define SK_NS isa_avx512
#define SK_VW 16
#define SK_NAME "avx512"
#define SK_OB 8
#define SK_NVD 3
#include "kernels_impl.inc"

// avx2 variant of the kernels (ISA flags come from CMakeLists.txt for this file only)
#define SK_NS isa_avx2
#define SK_VW 8
#define SK_NAME "avx2"
#define SK_OB 6
#define SK_NVD 2
#include "kernels_impl.inc"

// baseline variant of the kernels (ISA flags come from CMakeLists.txt for this file only)
#define SK_NS isa_baseline
#define SK_VW 4
#define SK_NAME "baseline"
#define SK_OB 6
#define SK_NVD 2
#include "kernels_impl.inc"

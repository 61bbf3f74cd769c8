// baseline variant of the kernels (ISA flags come from CMakeLists.txt for this file only)
#define SK_NS isa_baseline
#define SK_VW 4
#define SK_NAME "baseline"
#include "kernels_impl.inc"

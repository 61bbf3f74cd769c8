// sparse-cpu: kernel interface shared by every ISA variant (see kernels_impl.inc).
#pragma once
#include <cstdint>

namespace sk {

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_CLIP = 2, ACT_LEAKY = 3, ACT_SIGMOID = 4,
                 ACT_HARDSIGMOID = 5, ACT_HARDSWISH = 6, ACT_SILU = 7 /* x * sigmoid(x), fused Sigmoid + Mul */ };

// One convolution over one image. The input is a "work plane" view: element (c, row, col) of tap
// offset space lives at x[off + q] where q = oh * Wrow + ow is the flat padded-width output index.
struct ConvCall {
  const float* x;   // work input base (already offset for the conv's padding)
  int x_row;        // stride-2 direct kernel only: the input's padded row length (Wp)
  int L;            // flat output length = (Ho - 1) * Wrow + Wo
  int Wrow, Ho, Wo;
  // sparse format (per output channel CSR)
  const uint32_t* rowptr; const uint32_t* off; const float* val;
  // dense format: blocks of 8 output channels, [unit][ntaps][8]
  const uint32_t* doff; const float* dw; int ntaps; int Og; int nblk; int64_t gofs;
  const float* bias;           // may be null
  float* y; int64_t y_plane; int y_Wp, y_Hp, y_pt, y_pb, y_pl, y_pr;   // destination layout
  const float* r; int64_t r_plane; int r_Wp, r_pt, r_pl;              // residual (nullable)
  bool flat;                   // y_Wp == Wrow && (!r || r_Wp == Wrow)
  const int32_t* cmask;        // flat only (nullable): -1 where q % Wrow < Wo, 0 on the padding columns
  float* scratch;              // per thread: >= ob * (Ho * Wrow + 512) floats
  int64_t scratch_plane;
  int act; float a0, a1;
  // dense depthwise stride 2 from the padded input (conv_dw_s2 only): input plane stride, the conv's padded
  // input extent (rows, columns), phase-plane rows, and the kernel geometry
  int64_t x_plane; int xh, xw, Hq, kh, kw, dh, dwl;
  // interleaved batch layout (conv_il only): the conv's strides; Wo, y_Wp, y_pl, r_Wp, r_pl, x_row in floats;
  // ncb > 1: input-channel blocks, the non-zeros of output channel o in block b at
  // [cbptr[o * (ncb + 1) + b], cbptr[o * (ncb + 1) + b + 1]) (absolute indices into off / val)
  int sh, sw;
  const uint32_t* cbptr; int ncb;
  int groups;  // conv_dw_cl: channels (= groups)
  int ih, iw, ipt, ipl;  // conv_dw_cl: the input's rows and columns at (ipt, ipl) of the conv's padded input
  // conv_il / conv_il_dense: only output rows [oh0, oh1) (oh1 == 0: every row); the top pad rows are written
  // with row 0, the bottom ones with row Ho - 1 (engine.cpp runs chains of convs row by row: exec_row_chain)
  int oh0, oh1;
};

// Fully connected y = W x (+ b, + r), per image.
// sparse: nb == 1: x is one vector; nb > 1: xT is [F][nbp] (the batch in the vector lanes).
// dense: wp holds the weights in panels of FC_PANEL rows, [ceil(O / FC_PANEL)][F][FC_PANEL] (rows past O zero);
// image n's input at x + n * ldx, any nb; rows [o0, o1) with o0 a multiple of FC_PANEL and o1 one too or O.
struct FcCall {
  const float* x; const float* xT; int F; int nb; int nbp;
  const uint32_t* rowptr; const uint32_t* col; const float* val;  // sparse
  const float* wp; int O; int64_t ldx;                             // dense
  const float* bias;
  float* y; int64_t ldy;
  const float* r; int64_t ldr;
  int act; float a0, a1;
};

struct KernelTable {
  const char* name;
  int vw;  // floats per vector
  int ob;  // output channels per dense conv block (weight layout [unit][ntaps][ob])
  void (*conv_sparse)(const ConvCall&, int o0, int o1);
  void (*conv_dense)(const ConvCall&, int u0, int u1);
  void (*fc_sparse)(const FcCall&, int o0, int o1);
  void (*fc_dense)(const FcCall&, int o0, int o1);
  void (*gather2)(const float* src, float* dst, int n);  // dst[j] = src[2 j], j < n (stride-2 phase planes)
  // sparse conv over ni images at once (cs[0..ni), uniform image stride; scratch: >= 8 planes):
  // each non-zero's offset and weight broadcast feed every image's tile
  void (*conv_sparse_multi)(const ConvCall* cs, int ni, int o0, int o1);
  // sparse stride-2 conv straight from the padded input (x_row = its row length): output (oh, ow) reads
  // x[off + 2 oh x_row + 2 ow]; no phase planes
  void (*conv_sparse_s2)(const ConvCall& c, int o0, int o1);
  // dense conv (stride-1 work view) over ni images at once (small maps): register tiles of flat output
  // vectors taken across the images, each block's weights read once per call; same results as conv_dense
  // per image; [u0, u1) as conv_dense's
  void (*conv_dense_multi)(const ConvCall* cs, int ni, int u0, int u1);
  // max / average pooling of windows that lie wholly inside the input, nch channels x nrows output rows x
  // n columns: row i of channel c reads x + c * xch + i * xstep and writes y + c * ych + i * yrow; in a
  // row, y[j] (j < n) is over the taps x[kh * dh * xrow + j * sw + kw * dw] (kh < KH, kw < KW) in (kh, kw)
  // order; max: first maximum from -inf by `v > m` (NaN taps skipped), avg: sum from +0 in that order /
  // div. Bit-identical to that scalar loop for every ISA (engine.cpp exec_pool); reads only taps
  void (*pool_rows)(const float* x, int64_t xrow, int64_t xstep, int64_t xch, int KH, int KW, int dh, int dw,
                    int sw, int is_max, float div, float* y, int64_t yrow, int64_t ych, int n, int nrows, int nch);
  // dense conv with output channels in the vector lanes: dw is [unit][ntaps][2 vw] (units of 2 vw output
  // channels per group, c.nblk of them), same results as conv_dense; [u0, u1) over G * c.nblk units; the
  // scratch holds >= 4 vw planes of scratch_plane floats (channel rows, then the tiles' partial sums)
  void (*conv_dense_oc)(const ConvCall& c, int u0, int u1);
  // dense depthwise conv, stride 2, straight from the padded input (c.x, c.x_row, c.x_plane): per channel
  // the 4 phase planes (c.Hq x c.Wrow) are built in the private scratch after its first plane, then the
  // taps run over them as conv_dense's depthwise path does over the shared phase planes (same results);
  // [u0, u1) over channels; c.kh * c.kw <= DW_S2_MAX_TAPS
  void (*conv_dw_s2)(const ConvCall& c, int u0, int u1);
  // sparse conv in the interleaved batch layout: vw images in the vector lanes, element (c, h, w) of lane k
  // at c * plane + h * row + w * vw + k (rows, columns and pads of every tensor in floats: c.x_row, c.Wo,
  // c.y_Wp, c.y_pl, c.r_Wp, c.r_pl). c.x is the conv's padded-input origin, c.off the taps' offsets from it
  // (multiples of vw: every load is a whole vector, no line splits, no tails); output (oh, ow) reads
  // c.x + off + oh * sh * x_row + ow * sw * vw. Per lane the same arithmetic as conv_sparse's (bias, then the
  // non-zeros in order, one FMA each): the same bits. [o0, o1) output channels, pads zeroed
  void (*conv_il)(const ConvCall& c, int o0, int o1);
  // dense conv in the interleaved layout: weights and tap offsets (c.dw, c.doff, c.ntaps, c.Og, c.nblk,
  // c.gofs) as conv_dense's, the offsets in the interleaved layout; the same results per lane as conv_dense;
  // [u0, u1) over G * nblk units of ob output channels
  void (*conv_il_dense)(const ConvCall& c, int u0, int u1);
  // channel-broadcast multiply (is_mul) or add: for c < nch, h < rows, i < n:
  // y[c * yc + h * yr + i] = x[c * xc + h * xr + i] op g[c * gc] (squeeze-excitation gates, per-channel
  // shifts); exact per element, so every ISA gives the same bits
  void (*chan_bcast)(const float* x, int64_t xc, int64_t xr, const float* g, int64_t gc, float* y, int64_t yc,
                     int64_t yr, int64_t n, int64_t rows, int64_t nch, int is_mul);
  // dense depthwise conv (Og == Cg == 1) with the channels in the vector lanes, for small maps: dw is
  // [unit][kh * kw][vw] (unit u = channels u vw .., zero past c.groups); reads the input (c.ih x c.iw at row
  // c.ipt, column c.ipl of the conv's padded input c.x, row c.x_row, plane c.x_plane; the padding is taken as
  // zero, not read) at (oh sh + i dh, ow sw + j dwl) for any stride and dilation; the private scratch holds
  // (Rin Cw + Pz + vw) vw floats (Rin, Cw: the padded input rows and columns the taps reach; Pz: the output
  // plane's (y_pt + Ho + y_pb) y_Wp floats, each written whole, ring zeroed); Ho Wo <= DW_CL_MAX_POSITIONS;
  // no residual. Per lane the same arithmetic as conv_dense's depthwise path (the same bits); [u0, u1) over
  // units; c.kh * c.kw <= DW_S2_MAX_TAPS
  void (*conv_dw_cl)(const ConvCall& c, int u0, int u1);
  // a chunk's input into the interleaved layout, vw images: for h < rows, w < W, k < vw:
  // y[h * yr + w * vw + k] = k < nb ? x[k * xs + h * W + w] : 0
  void (*interleave)(const float* x, int64_t xs, int nb, int rows, int W, float* y, int64_t yr);
  // per-lane sums of nch interleaved planes (plane c at x + c * xc, row h at + h * xr, position w at + w * vw;
  // H rows x W positions): s[c * vw + k] = lane k's sum over the plane, from +0 in (h, w) order (mode 0), or
  // as 8 running sums (element i of a run into sum i % 8; a run per row: mode 1, one run: mode 2) added
  // ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) at the end
  void (*lane_sums)(const float* x, int64_t xc, int64_t xr, int H, int W, int mode, int nch, float* s);
};

constexpr int DW_S2_MAX_TAPS = 64;
constexpr int DW_CL_MAX_POSITIONS = 2048;  // conv_dw_cl: most output positions (planner.DW_CL_MAX_POSITIONS bounds its input)
constexpr int FC_PANEL = 16;  // rows per packed dense FC panel (FcCall::wp): a multiple of every ISA's vector width

// apply an activation to a scalar (shared by the generic ops)
float act_scalar(float v, int act, float a0, float a1);

}  // namespace sk

#define SK_DECLARE_TABLE(ns) namespace sk { namespace ns { extern const KernelTable table; } }

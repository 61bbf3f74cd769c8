// Standalone parity test of the engine's kernel tables (no Python, no pybind11): every ISA variant linked
// into this binary (native/kernels_<isa>.cpp) against a plain scalar reference written here, on random
// shapes, sparsities, strides, groups, dilations, activations, residuals and output layouts.
// Output buffers start as NaN sentinels, so a kernel that skips an element or writes outside its planes
// fails too. Exit 0: every case matched; 1: a mismatch (one FAIL line per failing case); 2: bad usage.
// Built and run by native/tests/build.sh (`make test-native`; `make test-aarch64` cross-compiles it for
// aarch64 and runs it under qemu-aarch64).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernels.h"

SK_DECLARE_TABLE(isa_baseline)
#ifdef SK_HAVE_AVX2
SK_DECLARE_TABLE(isa_avx2)
#endif
#ifdef SK_HAVE_AVX512
SK_DECLARE_TABLE(isa_avx512)
#endif
#ifdef SK_HAVE_NEON
SK_DECLARE_TABLE(isa_neon)
#endif

// act_scalar (called by the kernels' scalar paths): the engine's own definition; the reference below uses its
// own act_ref.
#include "act_scalar.inc"

using sk::ConvCall;
using sk::FcCall;
using sk::KernelTable;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- reference ------------------------------------------------------------------------------------
double act_ref(double v, int act, double a0, double a1) {
  switch (act) {
    case sk::ACT_RELU: return v > 0 ? v : 0;
    case sk::ACT_CLIP: return v < a0 ? a0 : (v > a1 ? a1 : v);
    case sk::ACT_LEAKY: return v >= 0 ? v : v * a0;
    case sk::ACT_SIGMOID: return 1 / (1 + std::exp(-v));
    case sk::ACT_HARDSIGMOID: return std::fmin(1.0, std::fmax(0.0, v * a0 + a1));
    case sk::ACT_HARDSWISH: return v * std::fmin(1.0, std::fmax(0.0, v / 6 + 0.5));
    case sk::ACT_SILU: return v / (1 + std::exp(-v));
    default: return v;
  }
}

struct Rng {
  uint64_t s;
  uint64_t next() {  // splitmix64
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int range(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }  // inclusive
  float uni(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / (1ull << 24))); }
  bool chance(double p) { return (next() >> 11) * (1.0 / (1ull << 53)) < p; }
};

// random activation with its parameters
void pick_act(Rng& g, int& act, float& a0, float& a1) {
  act = g.range(0, 7);
  a0 = 0.f; a1 = 0.f;
  if (act == sk::ACT_CLIP) { a0 = g.uni(-1.f, 0.f); a1 = g.uni(0.2f, 1.5f); }
  if (act == sk::ACT_LEAKY) a0 = g.uni(0.01f, 0.3f);
  if (act == sk::ACT_HARDSIGMOID) { a0 = 0.2f; a1 = 0.5f; }
}

// [begin, end) pieces of [0, n): 1-3 ranges, so the kernels' range arguments are exercised
std::vector<std::pair<int, int>> split(Rng& g, int n) {
  std::vector<std::pair<int, int>> r;
  int parts = n > 2 ? g.range(1, 3) : 1, b = 0;
  for (int p = 0; p < parts; p++) {
    int e = p == parts - 1 ? n : g.range(b, n);
    r.push_back({b, e});
    b = e;
  }
  return r;
}

// got vs reference (mag: sum of |terms|, the scale of the float rounding); a NaN reference means
// "must be left untouched" (the sentinel)
bool close(float got, double ref, double mag) {
  if (std::isnan(ref)) return std::isnan(got);
  return std::isfinite(got) && std::fabs(got - ref) <= 2e-4 * mag + 1e-5;
}

int g_fail = 0;
bool report(const KernelTable* t, const char* entry, int cs, const std::string& desc, const std::string& where,
            float got, double ref) {
  if (g_fail++ < 20)  // the first mismatches tell the story; the summary counts them all
    std::printf("FAIL %s %s case %d [%s]: %s = %.7g, expected %.7g\n", t->name, entry, cs, desc.c_str(),
                where.c_str(), got, ref);
  return false;
}

// ---- convolution cases ----------------------------------------------------------------------------
// One conv problem over ni images, in the engine's memory layout: the input planes are zero-padded by the
// conv's padding (row length Wp); stride 1 reads the work view x[off + q], q = oh * Wrow + ow (Wrow = Wp);
// stride 2 (conv_sparse_s2) reads x[off + 2 oh Wp + 2 ow] with Wrow >= ceil(Wp / 2). Output and residual
// planes have their own padding; flat layouts (row length Wrow) get the engine's column mask.
struct ConvCase {
  int C, H, W, O, G, Cg, Og, KH, KW, dh, dw, pt, pb, pl, pr, s, ni, ob;
  int act; float a0, a1; bool has_bias, has_res, flat;
  int Hp, Wp, Ho, Wo, Wrow, L, nblk, ntaps;
  int64_t Pin, xstride;
  int ypt, ypb, ypl, ypr, yWp, yHp; int64_t yplane, ystride;
  int rpt, rpl, rWp, rHp; int64_t rplane, rstride;
  std::vector<float> w, bias, x, r, y, val, dwt, scratch;
  std::vector<uint32_t> rowptr, off, doff;
  std::vector<int32_t> cmask;
  std::string desc;

  // stride s (1 or 2), ni images, small: maps small enough for the multi-image tiles, ob: dense block;
  // big: an input larger than L1 (> 32 KB) and >= 2 dense blocks (cache-blocking shapes)
  bool generate(Rng& g, int s_, int ni_, bool small, int ob_, bool big = false) {
    s = s_; ni = ni_; ob = ob_;
    C = big ? g.range(32, 40) : g.range(1, 10);
    G = 1;
    if (!big && g.chance(0.2)) G = C;                         // depthwise
    else if (!big && C % 2 == 0 && g.chance(0.2)) G = 2;      // grouped
    Cg = C / G;
    Og = big ? g.range(ob + 1, 3 * ob)
             : G == 1 ? g.range(1, 14) : g.chance(0.5) ? 1 : g.range(2, 3);  // Og == 1: the depthwise paths
    O = Og * G;
    H = big ? g.range(18, 26) : small ? g.range(1, 4) : g.range(1, 18);
    W = big ? g.range(18, 26) : small ? g.range(1, 4) : g.range(1, 22);
    const int ks[] = {1, 3, 3, 5};
    KH = ks[g.range(0, 3)]; KW = g.chance(0.8) ? KH : ks[g.range(0, 3)];
    dh = g.chance(0.15) ? 2 : 1; dw = g.chance(0.15) ? 2 : 1;
    pt = g.range(0, (KH / 2) * dh); pb = g.range(0, (KH / 2) * dh);
    pl = g.range(0, (KW / 2) * dw); pr = g.range(0, (KW / 2) * dw);
    Hp = H + pt + pb; Wp = W + pl + pr;
    const int eh = dh * (KH - 1) + 1, ew = dw * (KW - 1) + 1;
    if (Hp < eh || Wp < ew) return false;
    Ho = (Hp - eh) / s + 1; Wo = (Wp - ew) / s + 1;
    // stride 2: the phase-plane width, sometimes widened (the planner widens it to the output's padded width
    // so the conv stores in place; conv_sparse_s2 / conv_dw_s2 must not assume Wrow == ceil(Wp / 2))
    Wrow = s == 1 ? Wp : (Wp + 1) / 2 + (g.chance(0.3) ? g.range(1, 3) : 0);
    L = (Ho - 1) * Wrow + Wo;
    ntaps = Cg * KH * KW;
    nblk = (Og + ob - 1) / ob;
    pick_act(g, act, a0, a1);
    has_bias = g.chance(0.7); has_res = g.chance(0.4);
    const double density = g.chance(0.1) ? 1.0 : g.uni(0.0f, 0.5f);
    // output / residual layout: flat (row length Wrow, the engine's in-place rows) or padded planes
    const bool want_flat = g.chance(0.5);
    ypt = g.range(0, 2); ypb = g.range(0, 2);
    if (want_flat) { ypl = g.range(0, Wrow - Wo); ypr = Wrow - Wo - ypl; }
    else { ypl = g.range(0, 2); ypr = g.range(0, 2); }
    yWp = Wo + ypl + ypr; yHp = Ho + ypt + ypb; yplane = (int64_t)yHp * yWp;
    ystride = O * yplane + 7;
    rpt = g.range(0, 2);
    const int rpb = g.range(0, 2);
    if (want_flat) { rpl = g.range(0, Wrow - Wo); rWp = Wrow; }
    else { rpl = g.range(0, 2); rWp = Wo + rpl + g.range(0, 2); }
    rHp = Ho + rpt + rpb; rplane = (int64_t)rHp * rWp; rstride = O * rplane + 5;
    flat = yWp == Wrow && (!has_res || rWp == Wrow);

    // weights [O][Cg][KH][KW], then the two formats the engine builds from them
    w.assign((size_t)O * ntaps, 0.f);
    for (auto& v : w) if (g.chance(density)) v = g.uni(-1.f, 1.f);
    bias.resize(O);
    for (auto& v : bias) v = g.uni(-1.f, 1.f);
    Pin = (int64_t)Hp * Wp;
    auto tap_off = [&](int c, int kh, int kw) { return (uint32_t)(c * Pin + kh * dh * Wp + kw * dw); };
    rowptr.assign(1, 0); off.clear(); val.clear();
    for (int o = 0; o < O; o++) {
      const int gi = o / Og;
      for (int t = 0; t < ntaps; t++) {
        const float v = w[(size_t)o * ntaps + t];
        if (v == 0.f) continue;
        const int c = t / (KH * KW), kh = t / KW % KH, kw = t % KW;
        off.push_back((uint32_t)(gi * Cg * Pin) + tap_off(c, kh, kw));
        val.push_back(v);
      }
      rowptr.push_back((uint32_t)off.size());
    }
    doff.resize(ntaps);
    for (int t = 0; t < ntaps; t++) doff[t] = tap_off(t / (KH * KW), t / KW % KH, t % KW);
    dwt.assign((size_t)G * nblk * ntaps * ob, 0.f);  // [G][nblk][ntaps][ob]
    for (int o = 0; o < O; o++) {
      const int gi = o / Og, blk = (o % Og) / ob, k = (o % Og) % ob;
      for (int t = 0; t < ntaps; t++)
        dwt[(((size_t)gi * nblk + blk) * ntaps + t) * ob + k] = w[(size_t)o * ntaps + t];
    }

    // inputs: zero padding ring, random interior, NaN in the slack the kernels may over-read
    xstride = C * Pin + 2 * Wp + 320;
    x.assign((size_t)(ni * xstride + 2048), kNaN);
    for (int m = 0; m < ni; m++)
      for (int c = 0; c < C; c++)
        for (int h = 0; h < Hp; h++)
          for (int ww = 0; ww < Wp; ww++) {
            const bool in = h >= pt && h < pt + H && ww >= pl && ww < pl + W;
            x[m * xstride + c * Pin + (int64_t)h * Wp + ww] = in ? g.uni(-1.f, 1.f) : 0.f;
          }
    r.assign((size_t)(ni * rstride + 64), 0.f);
    for (auto& v : r) v = g.uni(-1.f, 1.f);
    y.assign((size_t)(ni * ystride + 64), kNaN);
    cmask.assign((size_t)L + 256, 0);
    for (int q = 0; q < L; q++) cmask[q] = q % Wrow < Wo ? -1 : 0;
    const int64_t splane = (int64_t)Ho * Wrow + 512;
    scratch.assign((size_t)(2 * std::max(ob, 8) * splane + 64), 0.f);

    char buf[320];
    std::snprintf(buf, sizeof buf,
                  "C=%d O=%d G=%d HxW=%dx%d K=%dx%d d=%d,%d s=%d pad=%d,%d,%d,%d nnz=%zu act=%d bias=%d res=%d "
                  "flat=%d ypad=%d,%d,%d,%d ni=%d",
                  C, O, G, H, W, KH, KW, dh, dw, s, pt, pl, pb, pr, val.size(), act, (int)has_bias,
                  (int)has_res, (int)flat, ypt, ypl, ypb, ypr, ni);
    desc = buf;
    return true;
  }

  ConvCall call(int m) {
    ConvCall c{};
    c.x = x.data() + m * xstride; c.x_row = Wp; c.L = L; c.Wrow = Wrow; c.Ho = Ho; c.Wo = Wo;
    c.rowptr = rowptr.data(); c.off = off.empty() ? nullptr : off.data(); c.val = val.empty() ? nullptr : val.data();
    c.doff = doff.data(); c.dw = dwt.data(); c.ntaps = ntaps; c.Og = Og; c.nblk = nblk; c.gofs = Cg * Pin;
    c.bias = has_bias ? bias.data() : nullptr;
    c.y = y.data() + m * ystride; c.y_plane = yplane; c.y_Wp = yWp; c.y_Hp = yHp;
    c.y_pt = ypt; c.y_pb = ypb; c.y_pl = ypl; c.y_pr = ypr;
    if (has_res) { c.r = r.data() + m * rstride; c.r_plane = rplane; c.r_Wp = rWp; c.r_pt = rpt; c.r_pl = rpl; }
    c.flat = flat;
    c.cmask = flat ? cmask.data() : nullptr;
    c.scratch = scratch.data(); c.scratch_plane = (int64_t)Ho * Wrow + 512;
    c.act = act; c.a0 = a0; c.a1 = a1;
    return c;
  }

  // every element of y (all images, padding ring and gaps included) against the reference
  bool verify(const KernelTable* t, const char* entry, int cs) {
    for (int m = 0; m < ni; m++) {
      const float* xm = x.data() + m * xstride;
      for (int64_t i = 0; i < ystride; i++) {
        const int o = (int)(i / yplane), hh = (int)(i % yplane / yWp), ww = (int)(i % yWp);
        double ref = kNaN, mag = 0;
        if (o < O) {
          const int oh = hh - ypt, ow = ww - ypl;
          ref = 0;
          if (oh >= 0 && oh < Ho && ow >= 0 && ow < Wo) {
            const int gi = o / Og;
            double acc = has_bias ? bias[o] : 0.0;
            mag = std::fabs(acc);
            for (int tp = 0; tp < ntaps; tp++) {
              const int c = tp / (KH * KW), kh = tp / KW % KH, kw = tp % KW;
              const double v = (double)w[(size_t)o * ntaps + tp] *
                               xm[(gi * Cg + c) * Pin + (int64_t)(oh * s + kh * dh) * Wp + ow * s + kw * dw];
              acc += v; mag += std::fabs(v);
            }
            if (has_res) {
              const double rv = r[m * rstride + o * rplane + (int64_t)(oh + rpt) * rWp + ow + rpl];
              acc += rv; mag += std::fabs(rv);
            }
            ref = act_ref(acc, act, a0, a1);
          }
        }
        const float got = y[m * ystride + i];
        if (!close(got, ref, mag)) {
          char where[96];
          std::snprintf(where, sizeof where, "image %d y[o=%d][row %d][col %d]", m, o, hh, ww);
          return report(t, entry, cs, desc, where, got, ref);
        }
      }
    }
    return true;
  }
};

const int kCases = 120;  // per entry and variant

bool check_conv_sparse(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  while (!k.generate(g, 1, 1, g.chance(0.3), t->ob)) {}
  ConvCall c = k.call(0);
  for (auto [b, e] : split(g, k.O)) t->conv_sparse(c, b, e);
  return k.verify(t, "conv_sparse", cs);
}

bool check_conv_sparse_s2(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  while (!k.generate(g, 2, 1, g.chance(0.3), t->ob)) {}
  ConvCall c = k.call(0);
  for (auto [b, e] : split(g, k.O)) t->conv_sparse_s2(c, b, e);
  return k.verify(t, "conv_sparse_s2", cs);
}

bool check_conv_dense(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  while (!k.generate(g, 1, 1, g.chance(0.3), t->ob)) {}
  ConvCall c = k.call(0);
  for (auto [b, e] : split(g, k.G * k.nblk)) t->conv_dense(c, b, e);
  return k.verify(t, "conv_dense", cs);
}

// inputs larger than L1 with several dense blocks
bool check_conv_dense_big(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  while (!k.generate(g, 1, 1, false, t->ob, true)) {}
  ConvCall c = k.call(0);
  for (auto [b, e] : split(g, k.G * k.nblk)) t->conv_dense(c, b, e);
  return k.verify(t, "conv_dense_big", cs);
}

// the oc form: output channels in the vector lanes (units of 2 vw channels), small and cache-sized inputs
bool check_conv_dense_oc(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  const bool big = g.chance(0.15);
  while (!k.generate(g, 1, 1, !big && g.chance(0.3), 2 * t->vw, big)) {}
  ConvCall c = k.call(0);
  for (auto [b, e] : split(g, k.G * k.nblk)) t->conv_dense_oc(c, b, e);
  return k.verify(t, "conv_dense_oc", cs);
}

// dense depthwise stride 2 straight from the padded input (phase planes built per channel in the scratch)
bool check_conv_dw_s2(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  while (!k.generate(g, 2, 1, g.chance(0.3), t->ob) || k.G != k.C || k.Og != 1 || k.KH * k.KW > sk::DW_S2_MAX_TAPS) {}
  ConvCall c = k.call(0);
  c.x_plane = k.Pin; c.xh = k.Hp; c.xw = k.Wp; c.Hq = (k.Hp + 1) / 2;
  c.kh = k.KH; c.kw = k.KW; c.dh = k.dh; c.dwl = k.dw;
  for (auto [b, e] : split(g, k.O)) t->conv_dw_s2(c, b, e);
  return k.verify(t, "conv_dw_s2", cs);
}

// dense depthwise with the channels in the vector lanes (conv_dw_cl): stride 1 or 2, no residual, small maps;
// weights repacked [unit][tap][vw], the padding of the input taken as zero (not read)
bool check_conv_dw_cl(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  const int s = g.chance(0.5) ? 1 : 2;
  while (!k.generate(g, s, 1, g.chance(0.3), t->ob) || k.G != k.C || k.Og != 1 || k.has_res ||
         k.KH * k.KW > sk::DW_S2_MAX_TAPS || k.Ho * k.Wo > sk::DW_CL_MAX_POSITIONS) {}
  const int vw = t->vw, nu = (k.G + vw - 1) / vw, nt = k.KH * k.KW;
  std::vector<float> wcl((size_t)nu * nt * vw, 0.f);
  for (int o = 0; o < k.O; o++)
    for (int tp = 0; tp < nt; tp++) wcl[((size_t)(o / vw) * nt + tp) * vw + o % vw] = k.w[(size_t)o * nt + tp];
  const int rin = (k.Ho - 1) * s + (k.KH - 1) * k.dh + 1, cw = (k.Wo - 1) * s + (k.KW - 1) * k.dw + 1;
  k.scratch.assign((size_t)(rin * cw + k.yplane + vw) * vw + 64, kNaN);  // planner.dw_cl_scratch's extent
  ConvCall c = k.call(0);
  c.dw = wcl.data(); c.x_plane = k.Pin; c.sh = c.sw = s; c.kh = k.KH; c.kw = k.KW; c.dh = k.dh; c.dwl = k.dw;
  c.groups = k.G; c.ih = k.H; c.iw = k.W; c.ipt = k.pt; c.ipl = k.pl;
  for (auto [b, e] : split(g, nu)) t->conv_dw_cl(c, b, e);
  return k.verify(t, "conv_dw_cl", cs);
}

// the interleaved batch layout: the case's vw images interleaved (lane m = image m, widths x vw), conv_il
// over all of them, the output de-interleaved into the case's planar buffers and checked there (every
// element: values, zero rings, untouched gaps)
bool check_conv_il(const KernelTable* t, Rng& g, int cs, bool dense) {
  ConvCase k;
  const int K = t->vw;
  while (!k.generate(g, g.chance(0.5) ? 2 : 1, K, g.chance(0.3), t->ob)) {}
  const int64_t PinK = k.Pin * K, WpK = (int64_t)k.Wp * K;
  std::vector<float> xi((size_t)(k.C * PinK + 64), kNaN), yi((size_t)(k.O * k.yplane * K + 64), kNaN),
      ri((size_t)(k.O * k.rplane * K + 64), kNaN);
  for (int m = 0; m < K; m++) {
    for (int64_t i = 0; i < k.C * k.Pin; i++) xi[i * K + m] = k.x[m * k.xstride + i];
    for (int64_t i = 0; i < k.O * k.rplane; i++) ri[i * K + m] = k.r[m * k.rstride + i];
  }
  std::vector<uint32_t> off;
  for (int o = 0; o < k.O; o++)
    for (int tp = 0; tp < k.ntaps; tp++) {
      if (k.w[(size_t)o * k.ntaps + tp] == 0.f) continue;
      const int c = tp / (k.KH * k.KW), kh = tp / k.KW % k.KH, kw = tp % k.KW;
      off.push_back((uint32_t)((o / k.Og) * k.Cg * PinK + c * PinK + kh * k.dh * WpK + kw * k.dw * K));
    }
  ConvCall c{};
  c.x = xi.data(); c.x_row = (int)WpK; c.sh = c.sw = k.s; c.Ho = k.Ho; c.Wo = k.Wo * K;
  c.rowptr = k.rowptr.data(); c.off = off.empty() ? nullptr : off.data(); c.val = k.val.empty() ? nullptr : k.val.data();
  c.bias = k.has_bias ? k.bias.data() : nullptr;
  c.y = yi.data(); c.y_plane = k.yplane * K; c.y_Wp = k.yWp * K; c.y_Hp = k.yHp;
  c.y_pt = k.ypt; c.y_pb = k.ypb; c.y_pl = k.ypl * K; c.y_pr = k.ypr * K;
  if (k.has_res) { c.r = ri.data(); c.r_plane = k.rplane * K; c.r_Wp = k.rWp * K; c.r_pt = k.rpt; c.r_pl = k.rpl * K; }
  c.act = k.act; c.a0 = k.a0; c.a1 = k.a1;
  std::vector<uint32_t> doff(k.ntaps);
  for (int tp = 0; tp < k.ntaps; tp++) {
    const int ch = tp / (k.KH * k.KW), kh = tp / k.KW % k.KH, kw = tp % k.KW;
    doff[tp] = (uint32_t)(ch * PinK + kh * k.dh * WpK + kw * k.dw * K);
  }
  c.doff = doff.data(); c.dw = k.dwt.data(); c.ntaps = k.ntaps; c.Og = k.Og; c.nblk = k.nblk; c.gofs = k.Cg * PinK;
  // sparse: sometimes in input-channel blocks of cb channels (partial sums through y; the same bits)
  std::vector<uint32_t> cbptr;
  if (!dense && k.Cg > 1 && g.chance(0.5)) {
    const int cb = g.range(1, k.Cg - 1), ncb = (k.Cg + cb - 1) / cb;
    for (int o = 0; o < k.O; o++)
      for (int b = 0; b <= ncb; b++) {
        uint32_t j = k.rowptr[o];
        while (j < k.rowptr[o + 1] && (b == ncb || (int)((off[j] - (o / k.Og) * k.Cg * PinK) / PinK) < b * cb)) j++;
        cbptr.push_back(j);
      }
    c.cbptr = cbptr.data(); c.ncb = ncb;
  }
  // half the cases in bands of output rows (c.oh0, c.oh1: the engine's row chains), in order
  std::vector<std::pair<int, int>> bands{{0, 0}};
  if (g.chance(0.5)) {
    bands.clear();
    for (int r = 0; r < k.Ho;) { const int e = std::min(k.Ho, r + g.range(1, 3)); bands.push_back({r, e}); r = e; }
  }
  for (auto [r0, r1] : bands) {
    c.oh0 = r0; c.oh1 = r1;
    if (dense) for (auto [b, e] : split(g, k.G * k.nblk)) t->conv_il_dense(c, b, e);
    else for (auto [b, e] : split(g, k.O)) t->conv_il(c, b, e);
  }
  for (int m = 0; m < K; m++)
    for (int64_t i = 0; i < k.O * k.yplane; i++) k.y[m * k.ystride + i] = yi[i * K + m];
  return k.verify(t, dense ? "conv_il_dense" : "conv_il", cs);
}
bool check_conv_il_sparse(const KernelTable* t, Rng& g, int cs) { return check_conv_il(t, g, cs, false); }
bool check_conv_il_dense(const KernelTable* t, Rng& g, int cs) { return check_conv_il(t, g, cs, true); }

bool check_conv_sparse_multi(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  const int ni = g.range(1, 19);
  while (!k.generate(g, 1, ni, g.chance(0.8), t->ob)) {}
  std::vector<ConvCall> calls;
  for (int m = 0; m < ni; m++) calls.push_back(k.call(m));
  for (auto [b, e] : split(g, k.O)) t->conv_sparse_multi(calls.data(), ni, b, e);
  return k.verify(t, "conv_sparse_multi", cs);
}

// dense conv over several images at once (small maps: tiles across image boundaries; also the per-image
// fallback for padded outputs)
bool check_conv_dense_multi(const KernelTable* t, Rng& g, int cs) {
  ConvCase k;
  const int ni = g.range(1, 19);
  while (!k.generate(g, 1, ni, g.chance(0.8), t->ob)) {}
  std::vector<ConvCall> calls;
  for (int m = 0; m < ni; m++) calls.push_back(k.call(m));
  for (auto [b, e] : split(g, k.G * k.nblk)) t->conv_dense_multi(calls.data(), ni, b, e);
  return k.verify(t, "conv_dense_multi", cs);
}

bool check_gather2(const KernelTable* t, Rng& g, int cs) {
  const int n = g.range(0, 90);
  std::vector<float> src(2 * n + 1), dst(n + 8, kNaN);
  for (auto& v : src) v = g.uni(-1.f, 1.f);
  t->gather2(src.data(), dst.data(), n);
  for (int j = 0; j < n + 8; j++) {
    const double ref = j < n ? src[2 * j] : kNaN;
    if (!close(dst[j], ref, 0)) return report(t, "gather2", cs, "n=" + std::to_string(n),
                                              "dst[" + std::to_string(j) + "]", dst[j], ref);
  }
  return true;
}

// interleave: vw images' rows into lanes, exactly; nb < vw images leave zero lanes; W 0-40 (vector blocks and
// a tail); the gaps between output rows must stay untouched (NaN sentinels)
bool check_interleave(const KernelTable* t, Rng& g, int cs) {
  const int K = t->vw, nb = g.range(1, K), rows = g.range(1, 4), W = g.range(0, 40);
  const int64_t xs = (int64_t)rows * W + g.range(0, 5), yr = (int64_t)W * K + K * g.range(1, 2);  // a gap: yr > 0
  std::vector<float> x(K * xs + 1), y(rows * yr + 8, kNaN);
  for (auto& v : x) v = g.uni(-4.f, 4.f);
  t->interleave(x.data(), xs, nb, rows, W, y.data(), yr);
  for (int64_t j = 0; j < (int64_t)y.size(); j++) {
    const int64_t h = j / yr, w = (j % yr) / K, k = (j % yr) % K;
    const bool in = h < rows && w < W;
    const float ref = !in ? kNaN : k < nb ? x[k * xs + h * W + w] : 0.f;
    if (in ? !(y[j] == ref && !std::signbit(y[j]) == !std::signbit(ref)) : !std::isnan(y[j]))
      return report(t, "interleave", cs, "nb=" + std::to_string(nb) + " rows=" + std::to_string(rows) + " W=" +
                    std::to_string(W), "y[" + std::to_string(j) + "]", y[j], ref);
  }
  return true;
}

// lane_sums: per lane, the scalar definition's order of adds (one chain; 8 running sums with a run per row
// or one run), compared bit for bit; padded rows and channel gaps hold NaN (never read); H x W up to 20 x 20
bool check_lane_sums(const KernelTable* t, Rng& g, int cs) {
  const int K = t->vw, H = g.range(1, 20), W = g.range(1, 20), nch = g.range(1, 9), mode = g.range(0, 2);
  const int64_t xr = (int64_t)(W + g.range(0, 2)) * K, xc = H * xr + K * g.range(0, 3);
  std::vector<float> x(nch * xc + 1, kNaN), s(nch * K + 8, kNaN);
  for (int c = 0; c < nch; c++)
    for (int h = 0; h < H; h++)
      for (int j = 0; j < W * K; j++) x[c * xc + h * xr + j] = g.uni(-4.f, 4.f);
  t->lane_sums(x.data(), xc, xr, H, W, mode, nch, s.data());
  for (int j = 0; j < (int)s.size(); j++) {
    float ref = kNaN;
    if (j < nch * K) {
      const int c = j / K, k = j % K;
      float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, one = 0.f;
      int64_t i = 0;
      for (int h = 0; h < H; h++) {
        if (mode == 1) i = 0;
        for (int w = 0; w < W; w++, i++) {
          const float v = x[c * xc + h * xr + (int64_t)w * K + k];
          one += v;
          a[i % 8] += v;
        }
      }
      ref = mode == 0 ? one : ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
    if (j < nch * K ? !(s[j] == ref) : !std::isnan(s[j]))
      return report(t, "lane_sums", cs, "H=" + std::to_string(H) + " W=" + std::to_string(W) + " nch=" +
                    std::to_string(nch) + " mode=" + std::to_string(mode), "s[" + std::to_string(j) + "]", s[j], ref);
  }
  return true;
}

// chan_bcast: y[c * yc + h * yr + i] = x[c * xc + h * xr + i] * (or +) g[c * gc], exactly (one rounding, as
// the scalar op); strides with gaps between rows and channels, which must stay untouched (sentinels), n 0-40
bool check_chan_bcast(const KernelTable* t, Rng& g, int cs) {
  const int n = g.range(0, 40), rows = g.range(1, 4), nch = g.range(1, 5), is_mul = g.chance(0.5);
  const int64_t xr = n + g.range(0, 3), yr = n + g.range(1, 3), gc = g.range(1, 3);
  const int64_t xc = rows * xr + g.range(0, 5), yc = rows * yr + g.range(0, 5);
  std::vector<float> x(nch * xc + 1), gate(nch * gc + 1), y(nch * yc + 8, kNaN);
  for (auto& v : x) v = g.uni(-4.f, 4.f);
  for (auto& v : gate) v = g.uni(-2.f, 2.f);
  t->chan_bcast(x.data(), xc, xr, gate.data(), gc, y.data(), yc, yr, n, rows, nch, is_mul);
  for (int64_t j = 0; j < (int64_t)y.size(); j++) {
    const int64_t c = j / yc, h = (j % yc) / yr, i = (j % yc) % yr;
    const bool in = c < nch && h < rows && i < n;
    const float xv = in ? x[c * xc + h * xr + i] : 0.f;
    const float ref = in ? (is_mul ? xv * gate[c * gc] : xv + gate[c * gc]) : kNaN;
    if (in ? !(y[j] == ref) : !std::isnan(y[j])) return report(t, "chan_bcast", cs, "n=" + std::to_string(n) +
        " rows=" + std::to_string(rows) + " nch=" + std::to_string(nch), "y[" + std::to_string(j) + "]", y[j], ref);
  }
  return true;
}

// pool_rows: nch channels x nrows rows of pooling windows (max / avg, kernel 1-5, stride 1-3, dilation 1-2,
// n 0-40 columns) on inputs with +-0 ties, NaN and +-inf; must equal the scalar definition bit for bit (any
// NaN equals any NaN: payloads are not specified), leave every other output element (sentinels) untouched,
// and read nothing past the last tap (the input ends there)
bool check_pool_rows(const KernelTable* t, Rng& g, int cs) {
  const int KH = g.range(1, 5), KW = g.range(1, 5), dh = g.range(1, 2), dw = g.range(1, 2), sw = g.range(1, 3);
  const int n = g.chance(0.2) ? g.range(0, 7) : g.range(8, 40), is_max = g.range(0, 1);
  const int nrows = g.range(1, 3), nch = g.range(1, 2);
  const int64_t xrow = (int64_t)std::max(n, 1) * sw + (KW - 1) * dw + g.range(0, 5);
  const int64_t xstep = xrow * g.range(1, 2), xch = xstep * nrows + (int64_t)KH * dh * xrow + g.range(0, 9);
  const int64_t yrow = n + g.range(0, 3), ych = yrow * nrows + g.range(0, 5);
  const float div = (float)g.range(1, 30);
  auto tap = [&](int c, int i, int j, int kh, int kw) {
    return (int64_t)c * xch + (int64_t)i * xstep + (int64_t)kh * dh * xrow + (int64_t)j * sw + kw * dw;
  };
  const int64_t last = n ? tap(nch - 1, nrows - 1, n - 1, KH - 1, KW - 1) : 0;
  std::vector<float> x(last + 1);
  const float special[] = {0.f, -0.f, 1.f, -1.f, kNaN, INFINITY, -INFINITY};
  for (auto& v : x) v = g.chance(0.3) ? special[g.range(0, 6)] : g.uni(-2.f, 2.f);
  const int64_t ylen = ych * nch + 16;
  std::vector<float> y(ylen, kNaN), want(ylen, kNaN);
  for (int c = 0; c < nch; c++)
    for (int i = 0; i < nrows; i++)
      for (int j = 0; j < n; j++) {
        float ref = is_max ? -INFINITY : 0.f;
        for (int kh = 0; kh < KH; kh++)
          for (int kw = 0; kw < KW; kw++) {
            const float v = x[tap(c, i, j, kh, kw)];
            if (is_max) ref = v > ref ? v : ref; else ref += v;
          }
        want[8 + c * ych + i * yrow + j] = is_max ? ref : ref / div;
      }
  t->pool_rows(x.data(), xrow, xstep, xch, KH, KW, dh, dw, sw, is_max, div, y.data() + 8, yrow, ych, n, nrows, nch);
  const std::string desc = std::string(is_max ? "max" : "avg") + " K=" + std::to_string(KH) + "x" +
                           std::to_string(KW) + " d=" + std::to_string(dh) + "," + std::to_string(dw) +
                           " sw=" + std::to_string(sw) + " n=" + std::to_string(n) + " rows=" +
                           std::to_string(nrows) + " ch=" + std::to_string(nch);
  for (int64_t q = 0; q < ylen; q++) {
    const float got = y[q], ref = want[q];
    const bool same = (std::isnan(got) && std::isnan(ref)) || std::memcmp(&got, &ref, sizeof got) == 0;
    if (!same) return report(t, "pool_rows", cs, desc, "y[" + std::to_string(q - 8) + "]", got, ref);
  }
  return true;
}

// ---- fully connected cases ------------------------------------------------------------------------
// y[n][o] = act(sum_f W[o][f] x[n][f] + b[o] + r[n][o]); sparse: nb == 1 reads x, nb > 1 reads xT [F][nbp]
// (nbp = nb rounded up to the vector width, zero lanes past nb, as the engine packs it); dense: panels, x
struct FcCase {
  int F, O, nb, nbp, ldy, ldr, act; float a0, a1; bool has_bias, has_res;
  std::vector<float> w, wp, bias, x, xT, r, y, val;
  std::vector<uint32_t> rowptr, col;
  std::string desc;

  void generate(Rng& g, int vw) {
    F = g.range(1, 300); O = g.chance(0.3) ? g.range(41, 200) : g.range(1, 40);  // (dense: 1..13 panels)
    nb = g.chance(0.4) ? 1 : g.range(2, 4 * vw);
    nbp = (nb + vw - 1) / vw * vw;
    ldy = O + g.range(0, 3); ldr = O + g.range(0, 3);
    pick_act(g, act, a0, a1);
    has_bias = g.chance(0.7); has_res = g.chance(0.4);
    const double density = g.chance(0.1) ? 1.0 : g.uni(0.0f, 0.4f);
    w.assign((size_t)O * F, 0.f);
    for (auto& v : w) if (g.chance(density)) v = g.uni(-1.f, 1.f);
    rowptr.assign(1, 0); col.clear(); val.clear();
    for (int o = 0; o < O; o++) {
      for (int f = 0; f < F; f++)
        if (w[(size_t)o * F + f] != 0.f) { col.push_back(f); val.push_back(w[(size_t)o * F + f]); }
      rowptr.push_back((uint32_t)col.size());
    }
    bias.resize(O);
    for (auto& v : bias) v = g.uni(-1.f, 1.f);
    x.resize((size_t)nb * F);
    for (auto& v : x) v = g.uni(-1.f, 1.f);
    xT.assign((size_t)F * nbp, 0.f);
    for (int f = 0; f < F; f++) for (int n = 0; n < nb; n++) xT[(size_t)f * nbp + n] = x[(size_t)n * F + f];
    r.resize((size_t)nb * ldr);
    for (auto& v : r) v = g.uni(-1.f, 1.f);
    y.assign((size_t)nb * ldy + 16, kNaN);
    char buf[160];
    std::snprintf(buf, sizeof buf, "F=%d O=%d nb=%d nnz=%zu act=%d bias=%d res=%d", F, O, nb, val.size(), act,
                  (int)has_bias, (int)has_res);
    desc = buf;
  }

  FcCall call(bool sparse) {
    FcCall c{};
    c.x = x.data(); c.xT = nb > 1 ? xT.data() : nullptr; c.F = F; c.nb = nb; c.nbp = nb > 1 ? nbp : 0;
    if (sparse) { c.rowptr = rowptr.data(); c.col = col.empty() ? nullptr : col.data(); c.val = val.empty() ? nullptr : val.data(); }
    else {  // the engine's panels (add_op): [ceil(O / P)][F][P], rows past O zero; every image from its row of x
      const int P = sk::FC_PANEL, np = (O + P - 1) / P;
      wp.assign((size_t)np * F * P, 0.f);
      for (int o = 0; o < O; o++)
        for (int f = 0; f < F; f++) wp[((size_t)(o / P) * F + f) * P + o % P] = w[(size_t)o * F + f];
      c.wp = wp.data(); c.O = O; c.ldx = F; c.xT = nullptr; c.nbp = 0;
    }
    c.bias = has_bias ? bias.data() : nullptr;
    c.y = y.data(); c.ldy = ldy;
    if (has_res) { c.r = r.data(); c.ldr = ldr; }
    c.act = act; c.a0 = a0; c.a1 = a1;
    return c;
  }

  bool verify(const KernelTable* t, const char* entry, int cs) {
    for (size_t i = 0; i < y.size(); i++) {
      const int n = (int)(i / ldy), o = (int)(i % ldy);
      double ref = kNaN, mag = 0;
      if (n < nb && o < O) {
        double acc = has_bias ? bias[o] : 0.0;
        mag = std::fabs(acc);
        for (int f = 0; f < F; f++) {
          const double v = (double)w[(size_t)o * F + f] * x[(size_t)n * F + f];
          acc += v; mag += std::fabs(v);
        }
        if (has_res) { acc += r[(size_t)n * ldr + o]; mag += std::fabs(r[(size_t)n * ldr + o]); }
        ref = act_ref(acc, act, a0, a1);
      }
      if (!close(y[i], ref, mag)) {
        char where[64];
        std::snprintf(where, sizeof where, "y[n=%d][o=%d]", n, o);
        return report(t, entry, cs, desc, where, y[i], ref);
      }
    }
    return true;
  }
};

bool check_fc_sparse(const KernelTable* t, Rng& g, int cs) {
  FcCase k;
  k.generate(g, t->vw);
  FcCall c = k.call(true);
  for (auto [b, e] : split(g, k.O)) t->fc_sparse(c, b, e);
  return k.verify(t, "fc_sparse", cs);
}

bool check_fc_dense(const KernelTable* t, Rng& g, int cs) {
  FcCase k;
  k.generate(g, t->vw);
  FcCall c = k.call(false);
  // threads take whole panels (exec_fc): split the panels, the last range ending at O
  const int P = sk::FC_PANEL, np = (k.O + P - 1) / P;
  for (auto [b, e] : split(g, np)) t->fc_dense(c, b * P, std::min(e * P, k.O));
  return k.verify(t, "fc_dense", cs);
}

// ---- driver ---------------------------------------------------------------------------------------
struct Entry { const char* name; bool (*check)(const KernelTable*, Rng&, int); };
const Entry kEntries[] = {
    {"conv_sparse", check_conv_sparse},       {"conv_sparse_s2", check_conv_sparse_s2},
    {"conv_dense", check_conv_dense},         {"conv_dense_big", check_conv_dense_big},
    {"conv_dense_oc", check_conv_dense_oc},   {"conv_dw_s2", check_conv_dw_s2},
    {"conv_dw_cl", check_conv_dw_cl},
    {"conv_sparse_multi", check_conv_sparse_multi},
    {"conv_dense_multi", check_conv_dense_multi}, {"conv_il", check_conv_il_sparse},
    {"conv_il_dense", check_conv_il_dense},
    {"fc_sparse", check_fc_sparse},           {"fc_dense", check_fc_dense},
    {"gather2", check_gather2},               {"pool_rows", check_pool_rows},
    {"chan_bcast", check_chan_bcast},         {"interleave", check_interleave},
    {"lane_sums", check_lane_sums},
};

// the variants compiled into this binary that this CPU can run (others are listed as skipped)
std::vector<const KernelTable*> variants() {
  std::vector<const KernelTable*> v{&sk::isa_baseline::table};
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#ifdef SK_HAVE_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) v.push_back(&sk::isa_avx2::table);
  else std::printf("SKIP avx2: this CPU lacks avx2/fma\n");
#endif
#ifdef SK_HAVE_AVX512
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    v.push_back(&sk::isa_avx512::table);
  else std::printf("SKIP avx512: this CPU lacks avx512f/bw/vl/dq\n");
#endif
#endif
#ifdef SK_HAVE_NEON
  v.push_back(&sk::isa_neon::table);  // Advanced SIMD is mandatory on aarch64
#endif
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 20261203;
  int cases = kCases;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (!std::strcmp(argv[i], "--cases") && i + 1 < argc) cases = std::atoi(argv[++i]);
    else { std::fprintf(stderr, "usage: %s [--seed N] [--cases N]\n", argv[0]); return 2; }
  }
  int total = 0;
  for (const KernelTable* t : variants()) {
    std::string line;
    for (const Entry& e : kEntries) {
      uint64_t h = seed;  // per entry stream: the same cases for every variant (FNV-1a of the name)
      for (const char* p = e.name; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001B3ull;
      Rng g{h};
      int bad = 0;
      for (int cs = 0; cs < cases; cs++) bad += !e.check(t, g, cs);
      line += std::string(" ") + e.name + (bad ? " FAILED" : " ok");
      total += cases;
    }
    std::printf("%-8s vw=%-2d ob=%d:%s\n", t->name, t->vw, t->ob, line.c_str());
  }
  if (g_fail) {
    std::printf("FAIL: %d of %d kernel parity cases mismatched the scalar reference\n", g_fail, total);
    return 1;
  }
  std::printf("OK: %d kernel parity cases match the scalar reference (seed %llu)\n", total,
              (unsigned long long)seed);
  return 0;
}

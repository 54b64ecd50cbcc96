"""The Bokeh documents of ``eoslab view``: the 2-D explorer, random second-order models, and the
run browser. Every number drawn is computed by :mod:`eoslab.view.compute` (eoslab's GD, theory
and sweeps) or read by :mod:`eoslab.view.runs` (the store, read-only) in the server process;
the browser only draws.

Models carry ``name`` attributes so a test (or a curious user in the browser console,
``Bokeh.documents[0].get_model_by_name("traj")``) can read back exactly what is drawn.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from eoslab.errors import EoslabError
from eoslab.view import compute, runs

# Colours (the edge and prediction colours match eoslab.plots.style).
EDGE = "#d62728"
PREDICTED = "#2ca02c"
STABLE = "#1f77b4"
TRAJ = "#ff7f0e"
PHASE_COLOURS = ("#9ecae1", "#fd8d3c", "#3b3b3b")  # below, edge of stability, diverged
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")
#: Default explorer state: the regime of Theorem 1 at ε = 0.1 (θ₂√(εη) = 2.2 lies in the
#: default initialisation box of ``eoslab run quadratic2d``).
DEFAULTS = {"eps": 0.1, "lr": 1.0, "E": 0.0, "steps": 2000, "theta1": 0.2, "theta2": 6.957}
REFRESH_MS = 1000

_STYLE = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
"""


def _fmt(v: float, digits: int = 6) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}g}"


# =========================================================================== explorer (2-D model)
class Explorer:
    """The 2-D model of Theorem 1: landscape, trajectory, ratio, loss, phase diagram."""

    def __init__(self, doc=None):
        from bokeh.models import (ColumnDataSource, Div, LinearColorMapper, NumericInput, Slider, Span)
        from bokeh.plotting import figure

        self.doc = doc
        st = dict(DEFAULTS)
        self.w_eps = NumericInput(title="ε (Q = diag(1, −ε))", value=st["eps"], mode="float", name="eps",
                                  width=130)
        self.w_lr = NumericInput(title="η (step size)", value=st["lr"], mode="float", name="lr", width=130)
        self.w_lr_slider = Slider(title="drag η", start=0.05, end=4.0, step=0.01, value=st["lr"], name="lr_slider",
                                  width=280)
        self.w_E = NumericInput(title="E (target)", value=st["E"], mode="float", name="E", width=110)
        self.w_steps = NumericInput(title="steps", value=st["steps"], mode="int", low=1, name="steps", width=110)
        self.w_t1 = NumericInput(title="θ₀,₁", value=st["theta1"], mode="float", name="theta1", width=130)
        self.w_t2 = NumericInput(title="θ₀,₂", value=st["theta2"], mode="float", name="theta2", width=130)
        self.outcome = Div(text="", name="outcome", width=1040, height=22)
        self.error = Div(text="", name="error", styles={"color": EDGE}, width=1040, height=18)

        # --- landscape with trajectory
        self.land = figure(title="loss landscape: contours of f, minima coloured by stability — click to set θ₀",
                           width=560, height=460, x_axis_label="θ₁", y_axis_label="θ₂",
                           tools="pan,wheel_zoom,box_zoom,reset,save", name="landscape",
                           match_aspect=False)
        self.cmap = LinearColorMapper(palette=_greys(), low=-6, high=2)
        self.src_img = ColumnDataSource(dict(image=[np.zeros((2, 2))], x=[0.0], y=[0.0], dw=[1.0], dh=[1.0]))
        self.land.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.src_img, color_mapper=self.cmap)
        self.contours = None
        self.src_min = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[], colour=[], ratio=[]), name="minima")
        self.land.segment("x0", "y0", "x1", "y1", source=self.src_min, line_color="colour", line_width=4,
                          line_alpha=0.85)
        # legend proxies for the minimiser colours
        self.land.line([np.nan], [np.nan], line_color=STABLE, line_width=4, legend_label="minima, stable (ηλ < 2)")
        self.land.line([np.nan], [np.nan], line_color=EDGE, line_width=4, legend_label="minima, unstable (ηλ > 2)")
        self.src_traj = ColumnDataSource(dict(x=[], y=[], t=[]), name="traj")
        self.land.line("x", "y", source=self.src_traj, line_color=TRAJ, line_width=1, line_alpha=0.6,
                       legend_label="GD trajectory")
        self.land.scatter("x", "y", source=self.src_traj, size=3, color=TRAJ)
        self.src_start = ColumnDataSource(dict(x=[st["theta1"]], y=[st["theta2"]]), name="theta0")
        start = self.land.scatter("x", "y", source=self.src_start, size=13, marker="circle", fill_color="white",
                                  line_color="black", line_width=2, legend_label="θ₀ (click or drag)")
        from bokeh.models import PointDrawTool

        # Drag the θ₀ marker (Bokeh's point-drag tool: no adding or deleting points); a click
        # elsewhere also sets θ₀ (the figure's Tap event). Pan and zoom are one click away in the
        # toolbar. No TapTool: as the active tap tool it deactivated the point-drag tool (which
        # also handles taps) as a whole, so the marker could not be dragged until its toolbar
        # icon was clicked.
        drag = PointDrawTool(renderers=[start], add=False, drag=True, num_objects=1, description="drag θ₀")
        self.land.add_tools(drag)
        self.land.toolbar.active_drag = drag
        self.src_start.on_change("data", self._on_drag)
        self.land.legend.location = "top_left"
        self.land.legend.background_fill_alpha = 0.7
        self.land.legend.label_text_font_size = "9pt"

        # --- ratio and loss against t
        self.rat = figure(title="η·λ_t/2 (λ: the NTK θ₁² + ε²θ₂²; 1 is the edge λ = 2/η)", width=560, height=260,
                          x_axis_label="step t + 1", x_axis_type="log", tools="pan,wheel_zoom,box_zoom,reset,save",
                          name="ratio_plot")
        self.src_ratio = ColumnDataSource(dict(t=[], ratio=[], hratio=[]), name="ratio")
        self.rat.line("t", "hratio", source=self.src_ratio, line_color="#9e9e9e", line_width=1,
                      legend_label="η·λ_max(∇²L)/2")
        self.rat.line("t", "ratio", source=self.src_ratio, line_color="black", line_width=1.5,
                      legend_label="η·λ_NTK/2")
        self.rat.line([np.nan], [np.nan], line_color=EDGE, line_dash="dashed", legend_label="edge (λ = 2/η)")
        self.rat.line([np.nan], [np.nan], line_color=PREDICTED, line_dash="dotted", line_width=2,
                      legend_label="predicted limit (Theorem 1)")
        self.rat.add_layout(Span(location=1.0, dimension="width", line_color=EDGE, line_dash="dashed"))
        self.pred_span = Span(location=np.nan, dimension="width", line_color=PREDICTED, line_dash="dotted",
                              line_width=2, name="predicted_span")
        self.rat.add_layout(self.pred_span)
        self.rat.legend.location = "top_right"
        self.rat.legend.label_text_font_size = "9pt"
        self.rat.legend.background_fill_alpha = 0.7
        self.loss = figure(title="loss ½(f − E)²", width=460, height=260, y_axis_type="log", x_axis_type="log",
                           x_axis_label="step t + 1",
                           tools="pan,wheel_zoom,box_zoom,reset,save", x_range=self.rat.x_range)
        self.src_loss = ColumnDataSource(dict(t=[], loss=[]))
        self.loss.line("t", "loss", source=self.src_loss, line_color="black")

        # --- phase diagram
        self.phase = figure(title="phase diagram over (η, θ₀,₂) at this θ₀,₁ — click to set both", width=460,
                            height=460, x_axis_label="η", y_axis_label="θ₀,₂", tools="tap,save,reset",
                            name="phase")
        self.phase_cmap = LinearColorMapper(palette=list(PHASE_COLOURS), low=-0.5, high=2.5)
        self.src_phase = ColumnDataSource(dict(image=[np.zeros((2, 2))], x=[0.0], y=[0.0], dw=[1.0], dh=[1.0]),
                                          name="phase_data")
        self.phase.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.src_phase,
                         color_mapper=self.phase_cmap)
        self.src_here = ColumnDataSource(dict(x=[st["lr"]], y=[st["theta2"]]))
        self.phase.scatter("x", "y", source=self.src_here, marker="circle_cross", size=14, fill_color=None,
                           line_color="black", line_width=2)
        legend = "".join(f'<span style="display:inline-block;width:12px;height:12px;background:{c};'
                         f'margin:0 4px 0 12px;vertical-align:middle"></span>{n}'
                         for c, n in zip(PHASE_COLOURS, compute.OUTCOMES))
        self.phase_legend = Div(text=legend + " &nbsp;(○: the current η, θ₀)", width=460)
        self.phase_info = Div(text="", name="phase_info", width=460, height=40)

        from bokeh.events import Tap

        self.land.on_event(Tap, self._on_land_tap)
        self.phase.on_event(Tap, self._on_phase_tap)
        for w in (self.w_eps, self.w_lr, self.w_E, self.w_steps, self.w_t1, self.w_t2):
            w.on_change("value", self._on_value)
        self.w_lr_slider.on_change("value_throttled", self._on_slider)
        self._busy = False
        self.timings: list[float] = []
        self.update()

    # ---- state
    def state(self) -> dict:
        return {"eps": self.w_eps.value, "lr": self.w_lr.value, "E": self.w_E.value, "steps": self.w_steps.value,
                "theta0": (self.w_t1.value, self.w_t2.value)}

    def layout(self):
        from bokeh.layouts import column, row
        from bokeh.models import Div

        intro = Div(text=(
            "<b>Theorem 1's 2-D model</b>: f(θ) = ½(θ₁² − εθ₂²), loss ½(f − E)², GD θ ← θ − η∇L. "
            "From θ₀ with θ₁ small and f far from E, the NTK λ grows (progressive sharpening) until ηλ/2 "
            "reaches 1, then GD oscillates across the valley and λ settles just below 2/η, at the limit "
            "that Theorem 1 predicts. Everything is computed by eoslab in the server process "
            "(<code>eoslab.dynamics.gd</code>, <code>eoslab.theory.eos2d</code>)."), width=1040)
        inputs = row(self.w_eps, self.w_lr, self.w_lr_slider, self.w_E, self.w_steps, self.w_t1, self.w_t2)
        return column(intro, inputs, self.error, self.outcome,
                      row(self.land, column(self.phase, self.phase_legend, self.phase_info)),
                      row(self.rat, self.loss), name="explorer")

    # ---- callbacks
    def _on_value(self, attr, old, new):
        if not self._busy:
            if self.w_lr.value is not None and self.w_lr_slider.start <= self.w_lr.value <= self.w_lr_slider.end:
                self.w_lr_slider.value = self.w_lr.value
            self.update()

    def _on_slider(self, attr, old, new):
        self.w_lr.value = float(new)  # triggers _on_value

    def _on_drag(self, attr, old, new):
        try:
            t1, t2 = float(new["x"][0]), float(new["y"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            return
        if (t1, t2) != (self.w_t1.value, self.w_t2.value):  # not our own redraw of the marker
            self._set(theta1=t1, theta2=t2)

    def _on_land_tap(self, event):
        self._set(theta1=float(event.x), theta2=float(event.y))

    def _on_phase_tap(self, event):
        self._set(lr=float(event.x), theta2=float(event.y))

    def _set(self, **kw):
        widgets = {"lr": self.w_lr, "theta1": self.w_t1, "theta2": self.w_t2}
        self._busy = True
        try:
            for k, v in kw.items():
                widgets[k].value = v
        finally:
            self._busy = False
        if "lr" in kw and self.w_lr_slider.start <= kw["lr"] <= self.w_lr_slider.end:
            self.w_lr_slider.value = kw["lr"]
        self.update()

    # ---- computation
    def update(self, phase: bool = True):
        """Recompute and redraw from the inputs; the phase diagram follows on the next tick
        (``phase=False``: only prepare its arguments, for :meth:`_update_phase`). The changes
        reach the browser as one message (one re-render, not one per property)."""
        with _held(self.doc):
            return self._update(phase)

    def _update(self, phase: bool):
        t0 = time.perf_counter()
        s = self.state()
        try:
            if any(v is None for v in (s["eps"], s["lr"], s["E"], s["steps"], *s["theta0"])):
                raise EoslabError("every input needs a value")
            tr = compute.trajectory2d(s["eps"], s["lr"], s["E"], s["theta0"], s["steps"])
        except EoslabError as e:
            self.error.text = f"error: {e}"
            return None
        self.error.text = ""
        eps, lr, E = float(s["eps"]), float(s["lr"]), float(s["E"])
        th = tr["theta"]
        # Steps after a divergence are NaN: drawn as a gap.
        self.src_traj.data = dict(x=th[:, 0], y=th[:, 1], t=tr["t"])
        self.src_start.data = dict(x=[float(s["theta0"][0])], y=[float(s["theta0"][1])])
        t1 = tr["t"] + 1.0  # log axis
        self.src_ratio.data = dict(t=t1, ratio=tr["ratio"], hratio=tr["hessian_ratio"])
        self.src_loss.data = dict(t=t1, loss=np.maximum(tr["loss"], 1e-300))
        self.pred_span.location = tr["predicted_ratio"] if math.isfinite(tr["predicted_ratio"]) else None
        window = self._window(eps, s["theta0"])
        self._draw_landscape(eps, lr, E, window)
        took = time.perf_counter() - t0
        self.timings.append(took)
        self.outcome.text = self._outcome_html(tr, s, took)
        self.src_traj.tags = [{"final_ratio": tr["final_ratio"], "predicted_ratio": tr["predicted_ratio"],
                              "outcome": tr["outcome"], "steps": int(s["steps"]), "lr": lr, "eps": eps, "E": E,
                              "theta0": [float(v) for v in s["theta0"]], "compute_s": took}]
        self._phase_args = (eps, lr, E, float(s["theta0"][0]), int(s["steps"]), window)
        if phase:
            self._schedule_phase()
        return tr

    def _window(self, eps, theta0):
        """The landscape's window: the box at η = 1 for this ε, kept while θ₀ stays inside it
        (changing η or clicking inside redraws only the trajectory, not the landscape)."""
        w = getattr(self, "_win", None)
        t1, t2 = float(theta0[0]), float(theta0[1])
        if w is None or w[0] != eps or not (w[1][0] <= t1 <= w[1][1] and w[1][2] <= t2 <= w[1][3]):
            self._win = (eps, compute.box(eps, 1.0, (t1, t2)))
        return self._win[1]

    def _outcome_html(self, tr, s, took) -> str:
        colour = {"edge of stability": PHASE_COLOURS[1], "diverged": PHASE_COLOURS[2]}.get(tr["outcome"], STABLE)
        parts = [f'<b style="color:{colour}">{tr["outcome"]}</b>']
        if tr["outcome"] == "diverged":
            parts.append(f"(at step {tr['diverged_at']:,})")
        else:
            parts.append(f"— η·λ/2 at the end (mean of the last {min(compute.TAIL, int(s['steps']))} steps): "
                         f"<b>{_fmt(tr['final_ratio'], 7)}</b>")
            parts.append(f"· predicted limit {_fmt(tr['predicted_ratio'], 7)}")
            parts.append(f"· max η·λ/2 {_fmt(tr['max_ratio'], 4)}")
        parts.append(f'<span style="color:#777">· computed in {took * 1e3:.0f} ms</span>')
        return " ".join(parts)

    def _draw_landscape(self, eps, lr, E, window):
        """Send only what changed: the image, contours and ranges depend on (ε, E, window), the
        colours of the minima also on η."""
        from bokeh.plotting.contour import contour_data

        if getattr(self, "_land_key", None) != (eps, E, window):
            self._land_key = (eps, E, window)
            ls = compute.landscape(eps, E, window)
            x0, x1, y0, y1 = window
            self.src_img.data = dict(image=[ls["log_loss"]], x=[x0], y=[y0], dw=[x1 - x0], dh=[y1 - y0])
            self.cmap.update(low=float(np.min(ls["log_loss"])), high=float(np.max(ls["log_loss"])))
            levels = np.linspace(ls["f"].min(), ls["f"].max(), 17)[1:-1]
            if self.contours is None:
                self.contours = self.land.contour(ls["x"], ls["y"], ls["f"], levels, line_color="#555555",
                                                  line_alpha=0.5, line_width=0.8)
            else:
                self.contours.set_data(contour_data(ls["x"], ls["y"], ls["f"], levels))
            self.land.x_range.update(start=x0, end=x1)
            self.land.y_range.update(start=y0, end=y1)
        if getattr(self, "_min_key", None) != (eps, lr, E, window):
            self._min_key = (eps, lr, E, window)
            mc = compute.minimiser_curve(eps, lr, E, window)
            self.src_min.data = dict(x0=mc["x0"], y0=mc["y0"], x1=mc["x1"], y1=mc["y1"], ratio=mc["ratio"],
                                     colour=np.where(mc["stable"], STABLE, EDGE))

    def _schedule_phase(self):
        # The trajectory is sent first; the phase diagram follows on the next tick.
        if self.doc is None:
            self._update_phase()
        elif not getattr(self, "_phase_pending", False):
            self._phase_pending = True
            self.doc.add_next_tick_callback(self._update_phase)

    def _update_phase(self):
        with _held(self.doc):
            self._compute_phase()

    def _compute_phase(self):
        self._phase_pending = False
        eps, lr, E, theta1, steps, window = self._phase_args
        t0 = time.perf_counter()
        lrs, t2 = compute.phase_axes(lr, window)
        ph = compute.phase_diagram(eps, E, theta1, lrs, t2, steps)
        dl, dt = lrs[1] - lrs[0], t2[1] - t2[0]
        self.src_phase.data = dict(image=[ph["code"].astype(np.float64)], x=[lrs[0] - dl / 2], y=[t2[0] - dt / 2],
                                   dw=[lrs[-1] - lrs[0] + dl], dh=[t2[-1] - t2[0] + dt])
        self.phase.x_range.start, self.phase.x_range.end = lrs[0] - dl / 2, lrs[-1] + dl / 2
        self.phase.y_range.start, self.phase.y_range.end = t2[0] - dt / 2, t2[-1] + dt / 2
        self.src_here.data = dict(x=[lr], y=[float(self.w_t2.value)])
        n = ph["code"].size
        counts = [int((ph["code"] == i).sum()) for i in range(3)]
        self.phase_info.text = (f"{ph['code'].shape[1]} step sizes × {ph['code'].shape[0]} values of θ₀,₂ "
                                f"({n:,} runs of {steps:,} steps, one vmap) in {1e3 * (time.perf_counter() - t0):.0f} ms: "
                                + ", ".join(f"{c:,} {o}" for c, o in zip(counts, compute.OUTCOMES)))


class _held:
    """Combine a document's change events into one message while the block runs, and walk its
    model graph once at the end instead of after every new model (Bokeh re-walks the whole
    document each time a reference is added: with every tab's models, that walk was most of
    the time of drawing a few runs)."""

    def __init__(self, doc):
        self.doc = doc if hasattr(doc, "hold") else None

    def __enter__(self):
        if self.doc is not None:
            self.doc.hold("combine")
            self._frozen = self.doc.models.freeze() if hasattr(self.doc, "models") else None
            if self._frozen is not None:
                self._frozen.__enter__()

    def __exit__(self, *exc):
        if self.doc is not None:
            try:
                if self._frozen is not None:
                    self._frozen.__exit__(*exc)
            finally:
                self.doc.unhold()
        return False


def _greys():
    from bokeh.palettes import Greys256

    return list(Greys256[90:])  # dark (high loss) … white (low loss)


# =========================================================================== random second-order models
class SecondOrderExplorer:
    """GD on a random second-order model of Theorem 2 (output space, exact)."""

    #: The inputs shown first (computed on the first click: compiling them at start-up would
    #: delay every server start).
    DEFAULTS = {"D": 40, "P": 80, "sigma_z": 1.0, "sigma_j": 1.0, "sigma_q": 1.0, "lr": 0.25, "steps": 2000, "seed": 0}

    def __init__(self, autorun: bool = False):
        from bokeh.models import Button, Div, NumericInput, Span
        from bokeh.plotting import figure

        mk = lambda title, v, mode="float", name=None: NumericInput(title=title, value=v, mode=mode, name=name,
                                                                     width=100)
        d = self.DEFAULTS
        self.w = {"D": mk("D (data)", d["D"], "int", "so_D"), "P": mk("P (params)", d["P"], "int", "so_P"),
                  "sigma_z": mk("σ_z", d["sigma_z"], name="so_sz"), "sigma_j": mk("σ_J", d["sigma_j"], name="so_sj"),
                  "sigma_q": mk("σ_q", d["sigma_q"], name="so_sq"), "lr": mk("η", d["lr"], name="so_lr"),
                  "steps": mk("steps", d["steps"], "int", "so_steps"), "seed": mk("seed", d["seed"], "int", "so_seed")}
        self.button = Button(label="run GD", button_type="primary", width=100, name="so_run")
        self.button.on_click(self.update)
        self.outcome = Div(text="press <i>run GD</i> (a new D, P or number of steps compiles once, a few seconds)",
                           name="so_outcome", width=900)
        self.rat = figure(title="η·λ/2 of the NTK's top two eigenvalues and of the Hessian (1 is the edge)",
                          width=700, height=300, x_axis_label="step t", tools="pan,wheel_zoom,box_zoom,reset,save")
        from bokeh.models import ColumnDataSource

        self.src = ColumnDataSource(dict(t=[], ratio=[], ratio2=[], hratio=[], loss=[]), name="so_traj")
        self.rat.line("t", "hratio", source=self.src, color="#9e9e9e", legend_label="η·λ_max(∇²L)/2")
        self.rat.line("t", "ratio", source=self.src, color="black", line_width=1.5, legend_label="η·λ₁(NTK)/2")
        self.rat.line("t", "ratio2", source=self.src, color=STABLE, legend_label="η·λ₂(NTK)/2")
        self.rat.add_layout(Span(location=1.0, dimension="width", line_color=EDGE, line_dash="dashed"))
        self.rat.legend.location = "bottom_right"
        self.loss = figure(title="loss", width=700, height=220, y_axis_type="log", x_axis_label="step t",
                           x_range=self.rat.x_range, tools="pan,wheel_zoom,box_zoom,reset,save")
        self.src_loss = ColumnDataSource(dict(t=[], loss=[]))
        self.loss.line("t", "loss", source=self.src_loss, color="black")
        if autorun:
            self.update()

    def layout(self):
        from bokeh.layouts import column, row
        from bokeh.models import Div

        intro = Div(text=("<b>Random second-order models</b> (Theorem 2): f(θ) = y + Gᵀθ + ½Q(θ, θ) with "
                          "z₀ ~ σ_z, J₀ ~ σ_J, Q ~ σ_q i.i.d. Gaussian (<code>eoslab.models.second_order.random</code>), "
                          "GD iterated exactly in output space (<code>eoslab.dynamics.gd_output</code>)."), width=1040)
        return column(intro, row(*self.w.values(), self.button), self.outcome, self.rat, self.loss)

    def update(self, *_):
        t0 = time.perf_counter()
        v = {k: w.value for k, w in self.w.items()}
        try:
            if any(x is None for x in v.values()):
                raise EoslabError("every input needs a value")
            r = compute.second_order_run(v["D"], v["P"], v["sigma_z"], v["sigma_j"], v["sigma_q"], v["lr"],
                                         v["steps"], v["seed"])
        except EoslabError as e:
            self.outcome.text = f'<span style="color:{EDGE}">error: {e}</span>'
            return
        self.src.data = dict(t=r["t"], ratio=r["ratio"], ratio2=r["ntk2_ratio"], hratio=r["hessian_ratio"],
                             loss=r["loss"])
        self.src_loss.data = dict(t=r["t"], loss=np.maximum(r["loss"], 1e-300))
        extra = (f"at step {r['diverged_at']:,}" if r["outcome"] == "diverged" else
                 f"— η·λ₁/2 at the end {_fmt(r['final_ratio'], 6)}, max {_fmt(r['max_ratio'], 4)}")
        self.outcome.text = (f"<b>{r['outcome']}</b> {extra} "
                             f'<span style="color:#777">· {1e3 * (time.perf_counter() - t0):.0f} ms</span>')


# =========================================================================== run browser
class RunBrowser:
    """Every run of a results root: a table, overlays of the chosen runs, refreshed from the store."""

    def __init__(self, root, doc=None, preselect: list[str] | None = None):
        from bokeh.models import (ColumnDataSource, DataTable, Div, MultiChoice, TableColumn)
        from bokeh.plotting import figure

        self.root = Path(root)
        self.doc = doc
        self._rows: dict[tuple, dict] = {}
        self.entries: list[runs.Entry] = []
        self.src_table = ColumnDataSource(dict(ref=[], experiment=[], kind=[], run_id=[], params=[], outcomes=[],
                                               steps=[], status=[]), name="runs_table")
        cols = [TableColumn(field="experiment", title="experiment", width=150),
                TableColumn(field="kind", title="kind", width=110),
                TableColumn(field="run_id", title="run", width=90),
                TableColumn(field="steps", title="steps", width=60),
                TableColumn(field="params", title="key parameters", width=350),
                TableColumn(field="outcomes", title="outcomes (scalars)", width=310),
                TableColumn(field="status", title="status", width=140)]
        self.table = DataTable(source=self.src_table, columns=cols, width=1220, height=260, selectable=True,
                               index_position=None, name="runs")
        self.src_table.selected.on_change("indices", self._on_select)
        # Fixed sizes (scrolling inside): a new text then does not make the page lay out again.
        self.status = Div(text="", name="runs_status", width=1200, height=22)
        self.message = Div(text="", name="runs_message", styles={"color": EDGE, "overflow-y": "auto"}, width=1200,
                           height=36)
        self.details = Div(text="", width=1200, height=240, name="runs_details", styles={"overflow-y": "auto"})
        tools = "pan,wheel_zoom,box_zoom,reset,save"
        self.f_loss = figure(title="loss", width=600, height=300, y_axis_type="log", x_axis_label="step",
                             tools=tools, name="runs_loss")
        self.f_eigs = figure(title="tracked eigenvalues (error bars: residual ‖Hv − λv‖), the edge (dashed)",
                             width=600, height=300, x_axis_label="step", tools=tools, name="runs_eigs",
                             x_range=self.f_loss.x_range)
        self.f_ratio = figure(title="η·λ/2 (1 is the edge)", width=600, height=300, x_axis_label="step",
                              tools=tools, x_range=self.f_loss.x_range, name="runs_ratio")
        self.f_other = figure(title="other per-step arrays (choose above)", width=600, height=300,
                              x_axis_label="step", tools=tools, x_range=self.f_loss.x_range, name="runs_other")
        from bokeh.core.properties import field
        from bokeh.models import Span

        self.f_ratio.add_layout(Span(location=1.0, dimension="width", line_color=EDGE, line_dash="dashed"))
        # One multi-line (every selected run's curves, one row each) and one segment renderer
        # (error bars) per panel: a new selection only replaces their data. Adding or removing a
        # renderer or legend item costs the page a relayout and restyle of the panel (~0.4 s of
        # Chromium time each, measured); a data change costs next to nothing.
        self.lines, self.bars = {}, {}
        for f in self._figs:
            self.lines[f.name] = ColumnDataSource(dict(xs=[], ys=[], colour=[], dash=[], width=[], alpha=[], label=[],
                                                       ref=[], curve=[]), name=f"{f.name}_lines")
            self.bars[f.name] = ColumnDataSource(dict(x=[], lo=[], hi=[], colour=[]), name=f"{f.name}_bars")
            f.segment("x", "lo", "x", "hi", source=self.bars[f.name], line_color="colour", line_alpha=0.5)
            f.multi_line("xs", "ys", source=self.lines[f.name], line_color="colour", line_dash=field("dash"),
                         line_width="width", line_alpha="alpha", legend_field="label")
            f.legend.location = "top_right"
            f.legend.background_fill_alpha = 0.6
            f.legend.label_text_font_size = "8pt"
        self.other_choice = MultiChoice(title="other arrays", options=[], value=[], width=600, name="runs_other_keys")
        self.other_choice.on_change("value", lambda attr, old, new: self._draw())
        self.selected: list[str] = []
        self._cache: dict[str, tuple] = {}  # run -> (stamp, run, series)
        self._quiet = False
        self._writing = 0
        self.refresh()
        self._preselect(preselect or [])

    def layout(self):
        from bokeh.layouts import column, row
        from bokeh.models import Div

        intro = Div(text=(f"<b>Runs</b> under <code>{self.root}</code> (read-only; refreshed every "
                          f"{REFRESH_MS // 1000} s: a sweep's new runs appear as they are stored, and a run being written "
                          "is listed as running and its curves grow until it is stored). "
                          "Select rows (shift/ctrl-click for several) to overlay them."), width=1200)
        return column(intro, self.status, self.message, self.table,
                      row(self.f_loss, self.f_eigs), row(self.f_ratio, column(self.other_choice, self.f_other)),
                      self.details)

    # ---- store
    def refresh(self):
        """Rescan the root; update the table when runs appeared, vanished or changed, and the
        plots only when a drawn run changed (the periodic callback of the page)."""
        entries = runs.scan(self.root)
        n_writing = runs.writing(self.root)
        if entries == self.entries and self.src_table.data["ref"] and n_writing == self._writing:
            return False
        self._writing = n_writing
        old = {e.ref: e.stamp for e in self.entries}
        self.entries = entries
        rows = [self._row(e) for e in entries]
        data = {k: [r[k] for r in rows] for k in self.src_table.data}
        refs = data["ref"]
        # A selected run being written that has been stored since is followed to its final place.
        final = {f"{e.experiment}/{runs.PARTIAL}{e.run_id}": e.ref for e in entries if e.progress is None}
        keep = list(dict.fromkeys(r if r in refs else final[r] for r in self.selected if r in refs or r in final))
        self._quiet = True  # re-selecting the same runs at their new rows is not a new selection
        try:
            height = int(min(320, 30 + 25 * max(len(rows), 1)))
            if self.table.height != height:
                self.table.height = height
            self.src_table.data = data
            # BokehJS's table redraws on a new number of rows only (its view's indices change);
            # a row that changed in place (a running run's progress) needs a property change.
            self.table.tags = [len(self.entries), time.monotonic()]
            self.src_table.selected.indices = [refs.index(r) for r in keep]
        finally:
            self._quiet = False
        n_bad = sum(e.problem is not None for e in entries)
        n_run = sum(e.progress is not None and e.problem is None for e in entries)
        n_stored = sum(e.progress is None for e in entries)
        self.status.text = (f"{n_stored} run(s) in {len({e.experiment for e in entries})} experiment(s)"
                            + (f", {n_run} running (shown as they grow)" if n_run else "")
                            + (f", {n_bad} incomplete or invalid (listed, not read)" if n_bad else "")
                            + (f", {n_writing} being stored now" if n_writing else "")
                            + f" · scanned {time.strftime('%H:%M:%S', time.gmtime())} UTC")
        changed = any(old.get(e.ref) != e.stamp for e in entries if e.ref in keep)
        if keep != self.selected or changed:
            self.selected = keep
            self._draw()
        return True

    def _row(self, e: runs.Entry) -> dict:
        key = (e.ref, e.stamp, e.problem)
        if key not in self._rows:
            self._rows[key] = runs.table_row(self.root, e)
        return self._rows[key]

    def _preselect(self, refs: list[str]):
        msgs, ok = [], []
        for ref in refs:
            try:
                runs.read(self.root, ref)  # refuses paths outside the root, invalid runs
                ok.append(ref)
            except EoslabError as e:
                msgs.append(str(e))
        self.message.text = "<br>".join(msgs)
        tab = self.src_table.data["ref"]
        self.src_table.selected.indices = [tab.index(r) for r in ok if r in tab]

    def _on_select(self, attr, old, new):
        if self._quiet:
            return
        refs = self.src_table.data["ref"]
        self.selected = [refs[i] for i in new if i < len(refs)]
        self._draw()

    # ---- plots
    def _draw(self):
        """Overlay the selected runs: each panel's curves are the rows of its multi-line source
        (and its error bars of its segment source), replaced as a whole when the selection or a
        drawn run (a run being written) changes. All of it reaches the page as one update."""
        with _held(self.doc):
            self._draw_now()

    def _draw_now(self):
        stamps = {e.ref: e.stamp for e in self.entries}
        lines = {f.name: {k: [] for k in self.lines[f.name].data} for f in self._figs}
        bars = {f.name: {k: [] for k in self.bars[f.name].data} for f in self._figs}
        other_keys, details = set(), []
        for i, ref in enumerate(self.selected[:len(RUN_COLOURS)]):
            colour = RUN_COLOURS[i]
            try:
                run, s = self._series(ref, stamps.get(ref))
            except (EoslabError, OSError, ValueError) as e:
                self.message.text = f"{ref}: {e}"
                continue
            exp, rid = ref.split("/")
            label = exp[:18] + "/" + rid.replace(runs.PARTIAL, "")[:6] + ("…" if rid.startswith(runs.PARTIAL) else "")
            x = s["x"]
            if i == 0:
                for f in self._figs:
                    f.xaxis.axis_label = s["x_name"]

            def line(fig, y, name, dash="solid", width=1.3, alpha=1.0, positive=False):
                ok = np.isfinite(y) & (y > 0 if positive else True)
                row = dict(xs=x[ok], ys=y[ok], colour=colour, dash=dash, width=width, alpha=alpha,
                           label=f"{label} {name}", ref=ref, curve=name)
                for k, v in row.items():
                    lines[fig.name][k].append(v)

            for name, y in s["loss"]:
                line(self.f_loss, y, name, positive=True)
            for name, y in s["flow_loss"]:
                line(self.f_loss, y, name, dash="dashed", positive=True)
            for j, (name, y, err) in enumerate(s["eigs"]):
                line(self.f_eigs, y, name, alpha=1.0 if j == 0 else 0.6)
                if err is not None:
                    ok = np.isfinite(y) & np.isfinite(err)
                    b = bars[self.f_eigs.name]
                    b["x"].append(x[ok])
                    b["lo"].append((y - err)[ok])
                    b["hi"].append((y + err)[ok])
                    b["colour"].append([colour] * int(ok.sum()))
            if s["edge"] is not None and s["eigs"]:
                line(self.f_eigs, s["edge"], "edge", dash="dashed", width=1.0)
            for name, y in s["flow_eigs"]:
                line(self.f_eigs, y, name, dash="dotdash", width=2)
            for name, y in s["ratio"]:
                line(self.f_ratio, y, name)
            for name, y in s["other"]:
                other_keys.add(name)
                if name in self.other_choice.value:
                    line(self.f_other, y, name)
            details.append(f"<details><summary>{ref}</summary><pre>{_escape(runs.details(run))}</pre></details>")
        for f in self._figs:
            new = lines[f.name]
            if not _same(self.lines[f.name].data, new):
                self.lines[f.name].data = new
            shown = bool(new["ref"])  # no empty legend box on an empty panel
            for leg in f.legend:
                if leg.visible != shown:
                    leg.visible = shown
            b = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in bars[f.name].items() if k != "colour"}
            b["colour"] = [c for part in bars[f.name]["colour"] for c in part]
            if not _same(self.bars[f.name].data, b):
                self.bars[f.name].data = b
        options = sorted(other_keys | set(self.other_choice.value))
        if options != list(self.other_choice.options):
            self.other_choice.options = options
        text = "".join(details)
        if text != self.details.text:
            self.details.text = text

    def curves(self) -> dict:
        """What is drawn: ``{(panel name, run ref, curve name): (x, y)}`` (error bars not included)."""
        out = {}
        for f in self._figs:
            d = self.lines[f.name].data
            for ref, name, xs, ys in zip(d["ref"], d["curve"], d["xs"], d["ys"]):
                out[(f.name, ref, name)] = (np.asarray(xs), np.asarray(ys))
        return out

    @property
    def _figs(self):
        return (self.f_loss, self.f_eigs, self.f_ratio, self.f_other)

    def _series(self, ref, stamp):
        """(run, runs.series(run)), read again only when the run's files changed."""
        hit = self._cache.get(ref)
        if hit is None or hit[0] != stamp or stamp is None:
            run = runs.read(self.root, ref)
            hit = self._cache[ref] = (stamp, run, runs.series(run))
        return hit[1], hit[2]


def _same(old: dict, new: dict) -> bool:
    """Whether two column dicts hold the same values (then nothing needs sending)."""
    def eq(u, v):
        if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
            u, v = np.asarray(u), np.asarray(v)
            return u.shape == v.shape and np.array_equal(u, v, equal_nan=u.dtype.kind == v.dtype.kind == "f")
        return u == v

    return set(old) == set(new) and all(
        len(old[k]) == len(new[k]) and (eq(old[k], new[k]) if isinstance(new[k], np.ndarray)
                                        else all(eq(u, v) for u, v in zip(old[k], new[k])))
        for k in new)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# =========================================================================== the document
def build(doc, runs_root) -> dict:
    """Fill a Bokeh ``doc`` with the three tabs; returns the panel objects (for tests)."""
    from bokeh.core.validation import silence
    from bokeh.core.validation.warnings import MISSING_RENDERERS
    from bokeh.models import TabPanel, Tabs

    silence(MISSING_RENDERERS, True)  # the run browser's panels are empty until runs are chosen
    args = {}
    ctx = getattr(doc, "session_context", None)
    if ctx is not None and getattr(ctx, "request", None) is not None:
        args = ctx.request.arguments or {}
    pre = [v.decode("utf-8", "replace") for v in args.get("run", [])]
    pre = [r for v in pre for r in v.split(",") if r]
    explorer = Explorer(doc)
    so = SecondOrderExplorer()
    browser = RunBrowser(runs_root, doc, preselect=pre)
    tabs = Tabs(tabs=[TabPanel(child=explorer.layout(), title="2-D model (Theorem 1)"),
                      TabPanel(child=so.layout(), title="random second-order models"),
                      TabPanel(child=browser.layout(), title="runs")], name="tabs",
                active=2 if pre else 0)
    doc.add_root(tabs)
    doc.title = "eoslab view"
    doc.add_periodic_callback(browser.refresh, REFRESH_MS)
    return {"explorer": explorer, "second_order": so, "runs": browser, "tabs": tabs}

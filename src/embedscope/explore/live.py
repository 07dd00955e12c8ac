"""Stage 5, live in JupyterLab: a plotly ``FigureWidget`` beside an ipywidgets panel.

Needs a running kernel (unlike ``explorer.html``, which survives sharing): hover shows the
image, click shows a larger one read from the original file and its nearest neighbours, a
dropdown changes the colouring, checkboxes filter classes, and a box or lasso selection comes
back to Python as a DataFrame (``LiveExplorer.selected``). Colours are the page's palette.
The selection shows as a gallery (each tile's "view" opens it as a click on its point would);
``relabel``, ``tag``, ``drop`` and ``undo`` (buttons or
methods) record decisions that ``save_decisions`` writes as the ``decisions.csv`` every editor
shares (:mod:`embedscope.decisions`), for ``make run-all DECISIONS=...``. The review queue
below walks the flagged images (the ``issues`` column) one at a time with the keys a, k, d and
the arrows, which a focused :class:`ReviewKeys` box takes before JupyterLab's notebook
shortcuts can see them.
With a :class:`~embedscope.search.Searcher`, a typed query (CLIP-family models) or "more like
this" from the clicked point lights up the top k and fills the gallery with their scores.
plotly >= 6 renders FigureWidget through ``anywidget``.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import pandas as pd
import traitlets

from embedscope.decisions import (
    MESSAGES,
    REVIEW_KEYS,
    DecisionLog,
    ReviewQueue,
    counts_line,
    own_labels,
    suggestion_text,
    suggestions,
)
from embedscope.explore.atlas import point_jpeg, preview_jpeg
from embedscope.explore.palette import by_cluster, class_colour, class_order, colour_groups
from embedscope.layout import os_path
from embedscope.search import MAX_LIKE, PROMPT_PREFIX, Searcher
from embedscope.thumbs import ThumbnailCache
from embedscope.vocabulary import CLUSTER, MISLABEL_SCORE, OUTLIER_SCORE, UNLABELLED

_SCORES = (CLUSTER, MISLABEL_SCORE, OUTLIER_SCORE)
#: Name of the trace that rings a search's results.
FOUND = "search results"
#: Tiles the gallery shows at most (the first ones of the selection, in row order).
GALLERY_SIZE = 48
#: Side of the review queue's picture, read from the original file.
REVIEW_PX = 480


class ReviewKeys(anywidget.AnyWidget):
    """A focusable box that turns the review keys into messages to Python. It stops them
    where they land (``data-lm-suppress-shortcuts`` and no propagation), so a key meant for the
    queue never reaches JupyterLab's notebook shortcuts (``d d`` deletes a cell there)."""

    _esm = """
    export default { render({ model, el }) {
      const box = document.createElement("div");
      box.tabIndex = 0;
      box.className = "embedscope-review-keys";
      box.setAttribute("data-lm-suppress-shortcuts", "true");
      box.textContent = "keys: click here, then a accept · k keep · d drop · ← → move";
      box.style.cssText = "padding:6px 10px;border:1px dashed #98a2b3;border-radius:6px;" +
        "cursor:pointer;font-size:12px;color:#475467;outline-offset:2px";
      const arrows = {ArrowLeft: "prev", ArrowRight: "next"};
      box.addEventListener("keydown", (e) => {
        const keys = model.get("bindings");
        const name = arrows[e.key] || (!e.ctrlKey && !e.metaKey && !e.altKey && keys[e.key]);
        e.stopPropagation();
        if (!name) return;
        e.preventDefault();
        model.send({action: name});
      });
      box.addEventListener("focus", () => { box.style.borderStyle = "solid"; });
      box.addEventListener("blur", () => { box.style.borderStyle = "dashed"; });
      el.appendChild(box);
    } };
    """
    bindings = traitlets.Dict(REVIEW_KEYS).tag(sync=True)


class LiveExplorer:
    """Build with the points of ``04_explore`` (x, y, optional z, label, path, scores) and the
    dataset's kept ``decisions`` (:func:`~embedscope.decisions.dataset_decisions`), where its
    decisions start."""

    def __init__(
        self,
        points: pd.DataFrame,
        image_root: str | Path,
        *,
        neighbors: np.ndarray | None = None,
        thumb_size: int = 160,
        preview_size: int = 640,
        gallery_size: int = GALLERY_SIZE,
        searcher: Searcher | None = None,
        thumbnails: ThumbnailCache | None = None,
        decisions: pd.DataFrame | None = None,
    ) -> None:
        import ipywidgets as w
        import plotly.graph_objects as go

        self.points = points.reset_index(drop=True).copy()
        self.points["label"] = self.points["label"].fillna(UNLABELLED).astype(str)
        self.root, self.neighbors, self.size = Path(image_root), neighbors, thumb_size
        self.preview_size = preview_size
        self.thumbnails = thumbnails
        self.is3d = "z" in self.points and self.points["z"].notna().any()
        self.classes = class_order(self.points["label"])
        self.colours = {c: class_colour(c, k) for k, c in enumerate(self.classes)}
        self._selected: list[int] = []
        self._scores: dict[int, float] = {}  # row -> similarity of the last search
        self._clicked: int | None = None
        self.searcher = searcher
        labels = own_labels(self.points, decisions)  # before the kept decisions
        self.log = DecisionLog(labels=labels, base=decisions)
        self.queue = ReviewQueue(self.points)
        self.review_issue, self._review_at, self._review_picture = "", 0, None
        self._thumbs: dict[tuple[int, int], bytes] = {}
        self.gallery_size = gallery_size
        # the toolbar gets the top margin to itself; the legend starts below it, right of the map
        legend = dict(x=1.0, xanchor="left", y=1.0, yanchor="top", itemsizing="constant")
        self.fig = go.FigureWidget(
            layout=dict(
                height=600, margin=dict(l=0, r=0, t=40, b=0), legend=legend, template="plotly_white"
            )
        )
        # hidden until there is a picture: an empty <img> shows as a broken image
        self.image = w.Image(format="jpeg", layout=w.Layout(max_width="300px", display="none"))
        self.caption = w.Label()  # text, never HTML: file names are shown as typed
        self.path = w.Label()
        self.neighbour_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        for widget, name in [
            (self.image, "preview"),
            (self.caption, "caption"),
            (self.path, "path"),
            (self.neighbour_box, "neighbours"),
        ]:
            widget.add_class(f"embedscope-{name}")  # stable handles for tests and styling
        self.colour = w.Dropdown(
            options=["label", *[c for c in _SCORES if c in self.points]]
            + [c for c in self.points if str(c).startswith(PROMPT_PREFIX)],
            value="cluster" if by_cluster(self.points) else "label",  # labels tell nothing apart
            description="colour",
        )
        self.checks = [w.Checkbox(value=True, description=c, indent=False) for c in self.classes]
        self.colour.observe(lambda _: self.redraw(), names="value")
        for box in self.checks:
            box.observe(lambda _: self.redraw(), names="value")
        panel = w.VBox(
            [
                self.colour,
                self.image,
                self.caption,
                self.path,
                w.Label("nearest neighbours (click a point)"),
                self.neighbour_box,
                w.VBox(self.checks),
            ],
            layout=w.Layout(width="320px"),
        )
        self.widget = w.VBox(
            [
                w.HBox([self.fig, panel]),
                self._search_panel(),
                self._curation_panel(),
                self._review_panel(),
            ]
        )
        self.redraw()
        self._refresh()

    def _search_panel(self):
        """A query box and "more like this" (from the clicked point), top ``k`` each."""
        import ipywidgets as w

        self.query = w.Text(placeholder="search: a dog on a sofa", continuous_update=False)
        self.k = w.BoundedIntText(
            value=20,
            min=1,
            max=MAX_LIKE,
            description="k",
            style={"description_width": "16px"},
            layout=w.Layout(width="110px"),
        )
        self.search_buttons = {
            "search": w.Button(description="search"),
            "more like this": w.Button(description="more like this"),
        }
        self.search_buttons["search"].on_click(lambda _: self._act(lambda: self.search()))
        self.search_buttons["more like this"].on_click(
            lambda _: self._act(lambda: self.more_like_this())
        )
        if self.searcher is None or not self.searcher.can_read_text:
            self.query.disabled = self.search_buttons["search"].disabled = True
            why = self.searcher.why if self.searcher else "no searcher given"
            self.search_buttons["search"].tooltip = self.query.placeholder = why
        if self.searcher is None:
            self.search_buttons["more like this"].disabled = True
        return w.HBox(
            [
                self.query,
                self.search_buttons["search"],
                self.k,
                self.search_buttons["more like this"],
            ]
        )

    def search(self, text: str | None = None, k: int | None = None) -> pd.DataFrame:
        """Rank every image by cosine to ``text`` (default: the query box); the top ``k``
        (default: the k box) become the selection, with their scores."""
        return self._found(
            *self._searcher().text(self.query.value if text is None else text, k or self.k.value)
        )

    def more_like_this(self, item: int | str | Path | None = None, k: int | None = None):
        """The top ``k`` images by cosine to ``item``: a row, an image file, or (default) the
        last clicked point; they become the selection, with their scores."""
        item = self._clicked if item is None else item
        if item is None:
            raise ValueError("click a point first")
        return self._found(*self._searcher().like(item, k or self.k.value))

    def _searcher(self) -> Searcher:
        if self.searcher is None:
            raise ValueError("no searcher: build LiveExplorer(..., searcher=Searcher...)")
        return self.searcher

    def _found(self, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        self.select(rows.tolist(), scores=dict(zip(rows.tolist(), scores.tolist(), strict=True)))
        return self.points.loc[rows.tolist()].assign(score=scores)

    def _curation_panel(self):
        """Decision buttons, a counter, and the gallery of the selection."""
        import ipywidgets as w

        self.new_label = w.Combobox(options=self.classes, placeholder="label: existing or new")
        self.new_tag = w.Text(placeholder="tag")
        self.counter = w.Label()
        self.message = w.Label()  # what went wrong ("nothing selected"), as text
        self.gallery_note = w.Label()
        self.gallery = w.GridBox(
            layout=w.Layout(grid_template_columns="repeat(auto-fill, 104px)", grid_gap="4px")
        )
        self.gallery.add_class("embedscope-gallery")
        actions = {
            "relabel": lambda: self.relabel(self.new_label.value),
            "tag": lambda: self.tag(self.new_tag.value),
            "drop": self.drop,
            "accept suggestion": self.accept_suggestion,
            "undo": self.undo,
            "clear selection": self.clear_selection,
        }
        # sized to their text, never squeezed ("accept suggestion" in full)
        self.buttons = {
            name: w.Button(description=name, layout=w.Layout(width="auto", flex="0 0 auto"))
            for name in actions
        }
        for name, act in actions.items():
            self.buttons[name].on_click(lambda _, act=act: self._act(act))
        b = self.buttons
        controls = w.HBox(
            [self.new_label, b["relabel"], self.new_tag, b["tag"], b["drop"]]
            + [b["accept suggestion"], b["undo"]]
        )
        status = w.HBox([b["clear selection"], self.counter, self.message])
        return w.VBox([controls, status, self.gallery_note, self.gallery])

    def _review_panel(self):
        """The review queue: one flagged image at a time, large, with its reason and
        neighbours; a, k, d, ← and → in the keys box, or the buttons."""
        import ipywidgets as w

        self.review_filter = w.Dropdown(options=self.queue.options(), value="", description="issue")
        self.review_filter.observe(lambda c: self.review(c["new"]), names="value")
        self.review_keys = ReviewKeys()
        self.review_keys.on_msg(lambda _, content, __: self._on_key(content.get("action")))
        self.review_progress = w.Label()
        self.review_position = w.Label()
        self.review_image = w.Image(format="jpeg", layout=w.Layout(max_width=f"{REVIEW_PX}px"))
        self.review_text = w.VBox()
        self.review_neighbours = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.review_label = w.Combobox(options=self.classes, placeholder="label: existing or new")
        self.review_tag = w.Text(placeholder="tag")
        self.review_message = w.Label()
        acts = {
            "← previous": lambda: self.review_move(-1),
            **{
                f"{name} ({key})": (lambda n=name: self.review_decide(n))
                for key, name in REVIEW_KEYS.items()
            },
            "next →": lambda: self.review_move(1),
            "set label": lambda: self.review_decide("label", self.review_label.value),
            "add tag": lambda: self.review_decide("tag", self.review_tag.value),
        }
        self.review_buttons = {
            name: w.Button(description=name, layout=w.Layout(width="auto", flex="0 0 auto"))
            for name in acts
        }
        for name, act in acts.items():
            self.review_buttons[name].on_click(lambda _, act=act: self._act(act))
        for widget, name in [
            (self.review_image, "review-image"),
            (self.review_progress, "review-progress"),
            (self.review_text, "review-text"),
        ]:
            widget.add_class(f"embedscope-{name}")
        b = list(self.review_buttons.values())
        info = w.VBox(
            [
                self.review_text,
                w.HBox(b[:5]),
                w.HBox([self.review_label, b[5], self.review_tag, b[6]]),
                self.review_message,
                w.Label("nearest neighbours"),
                self.review_neighbours,
            ]
        )
        head = w.HBox(
            [
                w.Label("Review queue"),
                self.review_filter,
                self.review_position,
                self.review_progress,
            ]  # fmt: skip
        )
        return w.VBox([head, self.review_keys, w.HBox([self.review_image, info])])

    def review(self, issue: str = "") -> None:
        """Show the queue of ``issue`` ("" for every flagged image): the image shown stays
        when it has that issue, else the queue starts over."""
        shown = self.review_row
        self.review_issue = issue
        entries = self.queue.entries(issue)
        self._review_at = entries.index(shown) if shown in entries else 0
        self.review_filter.value = issue
        self._render_review()

    @property
    def review_row(self) -> int | None:
        """The row the review queue shows (None when its filter leaves nothing)."""
        entries = self.queue.entries(self.review_issue)
        return entries[max(0, min(self._review_at, len(entries) - 1))] if entries else None

    def review_move(self, by: int) -> None:
        """Move ``by`` images along the queue (stops at either end)."""
        self._review_at += by
        self._render_review()

    def review_decide(self, action: str, text: str = "") -> None:
        """Decide for the image shown: "accept", "keep", "drop" (then on to the next) or the
        typed "label" / "tag" (:meth:`~embedscope.decisions.ReviewQueue.decide`)."""
        entries = self.queue.entries(self.review_issue)
        if not entries:
            raise ValueError(MESSAGES["no_findings" if not self.queue.rows else "queue_done"])
        row = entries[self._review_at]
        if self.queue.decide(self.log, row, self.review_issue, action, text):
            self._review_at += 1
        typed = {"label": self.review_label, "tag": self.review_tag}.get(action)
        if typed is not None:
            typed.value = ""
        self._refresh()

    def _on_key(self, action: str | None) -> None:
        moves = {"prev": -1, "next": 1}
        if action in moves:
            self._act(lambda: self.review_move(moves[action]))
        elif action in REVIEW_KEYS.values():
            self._act(lambda: self.review_decide(action))

    def _render_review(self) -> None:
        """The image at the queue's position, its reason, neighbours and the counters."""
        import ipywidgets as w

        entries = self.queue.entries(self.review_issue)
        self._review_at = max(0, min(self._review_at, len(entries) - 1))
        self.review_progress.value = self.queue.progress(self.decisions, self.review_issue)
        if not entries:
            self.review_position.value = ""
            self.review_image.value, self.review_image.layout.display = b"", "none"
            self._review_picture = None
            empty = MESSAGES["no_findings" if not self.queue.rows else "queue_done"]
            self.review_text.children = [w.Label(empty)]
            self.review_neighbours.children = []
            return
        row = entries[self._review_at]
        self.review_position.value = MESSAGES["position"].format(
            position=self._review_at + 1, total=len(entries)
        )
        if self._review_picture != row:  # read once per image, not on every decision
            self._review_picture = row
            picture = preview_jpeg(os_path(self.root, self.points["path"][row]), REVIEW_PX)
            self.review_image.value = picture or b""
            self.review_image.layout.display = None if picture else "none"
        decided = self.decisions.set_index("path")
        path = self.points["path"][row]
        label = self.log.labels.get(path, self.points["label"][row])  # before any decision
        new, tags = decided["label"].get(path, ""), decided["tags"].get(path, "")
        lines = [
            f"{label} → {new}" if new else label,
            suggestion_text(self.points.iloc[row]),
            "issues: " + ", ".join(self.queue.issues[row]),
            self.queue.reasons[row],
            path,
            tags.replace(";", ", "),
        ]
        self.review_text.children = [w.Label(t) for t in lines if t]
        if self.neighbors is not None:
            self.review_neighbours.children = [
                w.Image(value=self._thumb(int(j), 64), format="jpeg", width=64, height=64)
                for j in self.neighbors[row][:12]
            ]

    def _act(self, action) -> None:
        """Run a button's action; a refusal (nothing selected, empty label) shows as text."""
        try:
            action()
            self.message.value = self.review_message.value = ""
        except ValueError as exc:
            self.message.value = self.review_message.value = str(exc)

    def _thumb(self, row: int, size: int) -> bytes:
        """A JPEG thumbnail, from the thumbnail cache when it has the point's cell (no original
        decoded), made once: the gallery redraws after every decision."""
        if (row, size) not in self._thumbs:
            path = os_path(self.root, self.points["path"][row])
            sha = self.points["sha256"][row] if "sha256" in self.points else None
            self._thumbs[row, size] = point_jpeg(path, size, self.thumbnails, sha) or b""
        return self._thumbs[row, size]

    def redraw(self) -> None:
        """Rebuild the traces for the current colouring and class filter."""
        import plotly.graph_objects as go

        shown = {c.description for c in self.checks if c.value}
        keep = self.points[self.points["label"].isin(shown)]
        by = self.colour.value
        colours = self.colours
        if by == "label":
            groups = [(c, keep[keep["label"] == c]) for c in self.classes if c in shown]
        elif by == "cluster":  # a legend of clusters, as the page and Dash show them
            _, names, order, palette = colour_groups(self.points, "cluster")
            names = pd.Series(names, index=self.points.index).reindex(keep.index)
            colours = dict(zip(order, palette, strict=True))
            groups = [(c, keep[names == c]) for c in order]
        else:
            groups = [(by, keep)]
        traces = []
        for name, sel in groups:
            marker = dict(size=3 if self.is3d else 6)
            if by in ("label", "cluster"):
                marker |= dict(color=colours[name])
            else:
                marker |= dict(color=sel[by], colorscale="Viridis", showscale=True)
            kw = dict(
                x=sel["x"],
                y=sel["y"],
                name=name,
                mode="markers",
                marker=marker,
                customdata=sel.index.to_numpy(),
                hoverinfo="none",
            )
            traces.append(go.Scatter3d(z=sel["z"], **kw) if self.is3d else go.Scatter(**kw))
        self.fig.data = ()
        self.fig.add_traces(traces)
        for trace in self.fig.data:
            trace.on_hover(self._on_hover)
            trace.on_click(self._on_click)
            trace.on_selection(self._on_selection)
            trace.on_deselect(lambda *_: self.clear_selection())  # a double click
        self._light_up()

    def show(self, row: int, *, large: bool = False) -> None:
        """Put one point's image (a thumbnail, or a larger view read from the original file),
        label and path in the panel."""
        path = os_path(self.root, self.points["path"][row])
        picture = preview_jpeg(path, self.preview_size) if large else self._thumb(row, self.size)
        self.image.value = picture or b""
        self.image.layout.display = None if picture else "none"
        self.caption.value = self.points["label"][row]
        self.path.value = self.points["path"][row]

    def _row(self, trace, points) -> int | None:
        if not points.point_inds:
            return None
        return int(trace.customdata[points.point_inds[0]])

    def _on_hover(self, trace, points, state) -> None:
        row = self._row(trace, points)
        if row is not None:
            self.show(row)

    def _on_click(self, trace, points, state) -> None:
        row = self._row(trace, points)
        if row is not None:
            self.inspect(row)

    def inspect(self, row: int) -> None:
        """What a click on a point (or a gallery tile's "view") does: the larger image, its
        neighbours, and the point "more like this" starts from."""
        import ipywidgets as w

        self._clicked = row
        self.show(row, large=True)
        if self.neighbors is not None:
            self.neighbour_box.children = [
                w.Image(value=self._thumb(int(j), 64), format="jpeg", width=64, height=64)
                for j in self.neighbors[row][:8]
            ]

    def _on_selection(self, trace, points, selector) -> None:
        """plotly reports one box/lasso to every trace in order, so trace 0 starts a new
        selection (shift-select arrives from plotly as the union already)."""
        rows = [int(trace.customdata[i]) for i in points.point_inds]
        before = [] if points.trace_index == 0 else self._selected
        self.select(sorted(set(before) | set(rows)))

    def select(self, rows, *, scores: dict[int, float] | None = None) -> None:
        """Make ``rows`` (point numbers) the selection and show them in the gallery; with
        ``scores`` (a search's), in that order, scored and lit up on the map."""
        valid = [int(r) for r in rows if 0 <= int(r) < len(self.points)]
        self._selected = list(dict.fromkeys(valid)) if scores else sorted(set(valid))
        self._scores = {r: float(scores[r]) for r in self._selected} if scores else {}
        self._light_up()
        self._refresh()

    def _light_up(self) -> None:
        """Ring the scored rows on the map: one last trace, made on the first search and then
        updated in place (plotly may still be reporting a selection to every trace)."""
        import plotly.graph_objects as go

        found = self.points.loc[list(self._scores)]
        where = dict(x=found["x"], y=found["y"]) | ({"z": found["z"]} if self.is3d else {})
        where |= dict(customdata=found.index.to_numpy(), showlegend=bool(len(found)))
        old = [t for t in self.fig.data if t.name == FOUND]
        if old:
            old[0].update(**where)
            return
        if not len(found):
            return
        ring = dict(size=8 if self.is3d else 12, symbol="circle-open", color="#111111")
        kw = dict(name=FOUND, mode="markers", hoverinfo="none", marker=ring, **where)
        trace = go.Scatter3d(**kw) if self.is3d else go.Scatter(**kw)
        self.fig.add_trace(trace)
        self.fig.data[-1].on_hover(self._on_hover)
        self.fig.data[-1].on_click(self._on_click)

    def clear_selection(self) -> None:
        self.select([])

    @property
    def selected(self) -> pd.DataFrame:
        """The rows picked with the box or lasso tool so far."""
        return self.points.loc[self._selected]

    def _paths(self, rows) -> list[str]:
        rows = self._selected if rows is None else rows
        return self.points["path"].iloc[list(rows)].tolist()

    def relabel(self, label: str, rows=None) -> None:
        """Give ``rows`` (default: the selection) a new label, an existing one or a new one."""
        self.log.relabel(self._paths(rows), label)
        self._refresh()

    def tag(self, tag: str, rows=None) -> None:
        """Add a free-text tag to ``rows`` (default: the selection)."""
        self.log.tag(self._paths(rows), tag)
        self._refresh()

    def drop(self, rows=None) -> None:
        """Mark ``rows`` (default: the selection) to be left out of the next run."""
        self.log.drop(self._paths(rows))
        self._refresh()

    def accept_suggestion(self, rows=None) -> None:
        """Relabel ``rows`` (default: the selection) to their ``suggested_label`` where it
        differs from their label (the neighbours' similarity-weighted majority)."""
        self.log.relabel_each(suggestions(self.points, self._selected if rows is None else rows))
        self._refresh()

    def undo(self) -> None:
        """Take back the last relabel, tag or drop."""
        self.log.undo()
        self._refresh()

    @property
    def decisions(self) -> pd.DataFrame:
        """The decisions so far: one row per image, columns path, label, tags."""
        return self.log.table

    def save_decisions(self, path: str | Path) -> Path:
        """Write the decisions (atomically) as a ``decisions.csv`` for ``make run-all``."""
        return self.log.save(path)

    def _refresh(self) -> None:
        """Counter and gallery after a selection or a decision."""
        import ipywidgets as w

        table = self.decisions
        self.counter.value = f"{len(self._selected)} selected · {counts_line(table)}"
        table = table.set_index("path")
        shown = self._selected[: self.gallery_size]
        self.gallery_note.value = (
            f"showing {len(shown)} of {len(self._selected)} selected" if self._selected else ""
        )
        tiles = []
        for row in shown:
            path = self.points["path"][row]
            label = self.log.labels.get(path, self.points["label"][row])  # before any decision
            new, tags = table["label"].get(path, ""), table["tags"].get(path, "")
            text = [w.Label(f"{label} → {new}" if new else label), w.Label(path)]
            hints = (suggestion_text(self.points.iloc[row]), tags.replace(";", ", "))
            text += [w.Label(t) for t in hints if t]
            if row in self._scores:
                text.append(w.Label(f"score {self._scores[row]:.3f}"))
            picture = w.Image(value=self._thumb(row, 96), format="jpeg", width=96, height=96)
            view = w.Button(description="view", layout=w.Layout(width="96px"))
            view.on_click(lambda _, row=row: self.inspect(row))
            tiles.append(w.VBox([picture, view, *text], layout=w.Layout(width="104px")))
        self.gallery.children = tiles
        self._render_review()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

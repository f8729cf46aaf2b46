package plugin

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"

	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
)

// progressRedraw is how often the live line's spinner and clock move on a terminal.
const progressRedraw = 100 * time.Millisecond

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// progress shows a request's steps as they happen: one line per step when it completes,
// and, on a terminal, a live line with the step in progress and the time so far. Elsewhere
// (a pipe, CI logs) the step in progress gets one plain line when it starts.
type progress struct {
	out   io.Writer
	live  bool
	width int // of the terminal; the live line must not wrap, or it could not be redrawn
	now   func() time.Time

	// started is when the plugin began to follow, by the local clock: the API server's
	// condition times have whole seconds only, too coarse for steps that take a fraction.
	started   time.Time
	done      map[string]bool
	running   string // "Type: message" of the step in progress
	announced string // the step in progress last printed in plain mode
	frame     int
	drawn     bool
}

func newProgress(out io.Writer, live bool, now func() time.Time) *progress {
	p := &progress{out: out, live: live, now: now, started: now(), done: map[string]bool{}, width: 80}
	if f, ok := out.(*os.File); ok && live {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			p.width = w
		}
	}
	return p
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// endConditions name how a request ended; end prints them.
var endConditions = map[string]bool{
	opsv1alpha1.ConditionSuccessful: true, opsv1alpha1.ConditionFailed: true, opsv1alpha1.ConditionSkipped: true,
}

// pendingCondition is True while a request waits its turn: never a completed step.
const pendingCondition = "Pending"

// inProgress tells whether c is a step still running (False or Unknown), or the wait of a
// Pending request.
func inProgress(c metav1.Condition) bool {
	if c.Type == pendingCondition {
		return c.Status == metav1.ConditionTrue
	}
	return !endConditions[c.Type] && c.Status != metav1.ConditionTrue
}

// show prints what changed in req since the last call.
func (p *progress) show(req *opsv1alpha1.PostgresOpsRequest) {
	conds := append([]metav1.Condition(nil), req.Status.Conditions...)
	sort.SliceStable(conds, func(i, j int) bool { return conds[i].LastTransitionTime.Before(&conds[j].LastTransitionTime) })
	// The step in progress first, so the completed steps printed below never redraw the
	// live line with an older one.
	p.running = ""
	if req.Status.Phase == "" {
		p.running = "waiting for the ops-manager to admit the request"
	}
	for _, c := range conds {
		if inProgress(c) {
			p.running = c.Type + ": " + oneLine(c.Message)
		}
	}
	for _, c := range conds {
		if endConditions[c.Type] || c.Status != metav1.ConditionTrue || c.Type == pendingCondition || p.done[c.Type] {
			continue
		}
		p.done[c.Type] = true
		mark := "✓"
		if c.Type == string(req.Spec.Type) {
			mark = "▶" // the operation's own condition: it started
		}
		p.line(fmt.Sprintf("%s %-7s %s: %s", mark, p.elapsed(), c.Type, oneLine(c.Message)))
	}
	// Without a live line (a pipe, CI logs) the step in progress is printed whenever it or
	// what it says changes.
	if !p.live && p.running != "" && p.running != p.announced {
		p.announced = p.running
		p.line("… " + p.running)
	}
	p.redraw()
}

// end prints how req ended, with its reason when it did not succeed.
func (p *progress) end(req *opsv1alpha1.PostgresOpsRequest) {
	p.running = ""
	took := " in " + strings.TrimPrefix(p.elapsed(), "+")
	cond := meta.FindStatusCondition(req.Status.Conditions, req.Status.Phase.EndCondition())
	switch {
	case cond == nil:
		p.line(fmt.Sprintf("%s %s", req.Name, req.Status.Phase))
	case req.Status.Phase == opsv1alpha1.OpsRequestPhaseSuccessful:
		p.line(fmt.Sprintf("✓ %s %s%s: %s", req.Name, req.Status.Phase, took, oneLine(cond.Message)))
	default:
		p.line(fmt.Sprintf("✗ %s %s%s: %s: %s", req.Name, req.Status.Phase, took, cond.Reason, oneLine(cond.Message)))
		p.line(fmt.Sprintf("  Details: kubectl describe pgops -n %s %s", req.Namespace, req.Name))
	}
}

// line prints a permanent line above the live one.
func (p *progress) line(s string) {
	p.clear()
	fmt.Fprintln(p.out, s)
	p.redraw()
}

func (p *progress) clear() {
	if p.live && p.drawn {
		fmt.Fprint(p.out, "\r\033[K")
		p.drawn = false
	}
}

// redraw moves the live line's spinner and clock on.
func (p *progress) redraw() {
	if !p.live || p.running == "" {
		return
	}
	p.clear()
	p.frame = (p.frame + 1) % len(spinner)
	text := fmt.Sprintf("%s %-7s %s", spinner[p.frame], p.elapsed(), p.running)
	if r := []rune(text); len(r) > p.width-1 {
		text = string(r[:max(p.width-2, 1)]) + "…"
	}
	fmt.Fprint(p.out, text)
	p.drawn = true
}

// elapsed is the time since the plugin began to follow, e.g. "+2.4s".
func (p *progress) elapsed() string {
	d := max(p.now().Sub(p.started), 0)
	if d < time.Minute {
		return fmt.Sprintf("+%.1fs", d.Seconds())
	}
	return "+" + d.Truncate(time.Second).String()
}

// oneLine keeps a message on one line of plain text, whatever a condition holds: no line
// breaks, and no control characters a terminal would act on.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

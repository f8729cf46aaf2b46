package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"

	"github.com/pgops/pgops/pkg/plugin"
	"github.com/pgops/pgops/test/testenv"
)

// The docs are tested as a user would use them: every YAML block applies to a real API server
// with pgops's CRDs, every `kubectl pgops` command parses with the plugin's real flags, and
// every `make` target named exists. A block that cannot apply here says why on the line
// before its opening fence:
//
//	<!-- docs-test: skip: Helm values, not a Kubernetes object -->

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	file string
	line int    // of the opening fence
	lang string // the fence's info string: yaml, sh, text...
	text string
	skip string // the reason given by a docs-test marker, if any
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

var skipMarker = regexp.MustCompile(`^<!--\s*docs-test:\s*skip:\s*(.*?)\s*-->$`)

// documentationFiles are README.md and every Markdown file under docs/.
func documentationFiles(t *testing.T) []string {
	t.Helper()
	files := []string{testenv.Path("README.md")}
	err := filepath.WalkDir(testenv.Path("docs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	require.NoError(t, err)
	return files
}

// parseDocBlocks returns the fenced code blocks of a Markdown document, with the indentation
// of their opening fence removed (blocks inside list items are indented).
func parseDocBlocks(name string, r io.Reader) ([]docBlock, error) {
	var blocks []docBlock
	var open *docBlock
	var indent, previous string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if open != nil {
			if strings.HasPrefix(trimmed, "```") {
				blocks = append(blocks, *open)
				open = nil
				continue
			}
			open.text += strings.TrimPrefix(line, indent) + "\n"
			continue
		}
		if strings.HasPrefix(trimmed, "```") {
			indent = line[:len(line)-len(strings.TrimLeft(line, " \t"))]
			open = &docBlock{file: name, line: n, lang: strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))}
			if m := skipMarker.FindStringSubmatch(previous); m != nil {
				if m[1] == "" {
					return nil, fmt.Errorf("%s:%d: a docs-test skip marker must say why", name, n-1)
				}
				open.skip = m[1]
			}
		}
		if trimmed != "" {
			previous = trimmed
		}
	}
	if open != nil {
		return nil, fmt.Errorf("%s: the code block opened on line %d is never closed", name, open.line)
	}
	return blocks, sc.Err()
}

func documentationBlocks(t *testing.T) []docBlock {
	t.Helper()
	var all []docBlock
	for _, path := range documentationFiles(t) {
		f, err := os.Open(path)
		require.NoError(t, err)
		rel, _ := filepath.Rel(testenv.RepoRoot(), path)
		blocks, err := parseDocBlocks(rel, f)
		f.Close()
		require.NoError(t, err)
		all = append(all, blocks...)
	}
	require.NotEmpty(t, all, "the docs have code blocks")
	return all
}

func isShell(lang string) bool {
	switch lang {
	case "sh", "bash", "shell", "console":
		return true
	}
	return false
}

// TestDocsYAMLApplies applies every YAML block of the docs to the API server with a
// server-side dry run, each in the namespace of this test; a field the schema does not know
// is an error, as a typo in a manifest would be.
func TestDocsYAMLApplies(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace(t, ctx)
	cfg := cluster.AdminConfig()
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	groups, err := restmapper.GetAPIGroupResources(disco)
	require.NoError(t, err)
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	client, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)

	applied := 0
	for _, b := range documentationBlocks(t) {
		if b.lang != "yaml" && b.lang != "yml" {
			continue
		}
		if b.skip != "" {
			t.Logf("%s: skipped: %s", b, b.skip)
			continue
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(b.text), 4096)
		for {
			var obj unstructured.Unstructured
			err := dec.Decode(&obj.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			if !assert.NoError(t, err, "%s: not YAML (a block that is not an object needs a docs-test skip marker)", b) {
				break
			}
			if len(obj.Object) == 0 {
				continue
			}
			gvk := obj.GroupVersionKind()
			if !assert.NotEmpty(t, gvk.Kind, "%s: a YAML block that is not a Kubernetes object needs a docs-test skip marker", b) {
				continue
			}
			mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if !assert.NoError(t, err, "%s: %s is not served here (mark the block with the reason)", b, gvk) {
				continue
			}
			resource := client.Resource(mapping.Resource)
			var target dynamic.ResourceInterface = resource
			if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
				obj.SetNamespace(ns)
				target = resource.Namespace(ns)
			}
			if obj.GetName() == "" {
				_, err = target.Create(ctx, &obj, metav1.CreateOptions{
					DryRun: []string{metav1.DryRunAll}, FieldManager: "docs-test", FieldValidation: metav1.FieldValidationStrict})
			} else {
				var data []byte
				data, err = obj.MarshalJSON()
				require.NoError(t, err)
				_, err = target.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
					DryRun: []string{metav1.DryRunAll}, FieldManager: "docs-test", FieldValidation: metav1.FieldValidationStrict, Force: ptr.To(true)})
			}
			if assert.NoError(t, err, "%s: %s %q does not apply", b, gvk.Kind, obj.GetName()) {
				applied++
			}
		}
	}
	t.Logf("%d objects applied with a dry run", applied)
	assert.Positive(t, applied)
}

// shellCommands returns the commands of a shell block: prompts removed, continuation lines
// joined, each pipeline, list and redirection cut into its simple commands.
func shellCommands(text string) []string {
	var out []string
	joined := strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "$ ")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, part := range regexp.MustCompile(`\s(?:\|\||&&|\||;|&)\s`).Split(line, -1) {
			out = append(out, strings.TrimSpace(part))
		}
	}
	return out
}

// shellWords splits a command line the way a POSIX shell splits simple words: quotes group,
// a backslash escapes, and a comment or a redirection ends the command.
func shellWords(line string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", line)
			}
			word.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			end := strings.IndexByte(line[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated \" in %q", line)
			}
			word.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '\\' && i+1 < len(line):
			word.WriteByte(line[i+1])
			i++
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		case (c == '#' && !inWord) || c == '>' || c == '<':
			i = len(line)
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// pluginArgs returns the plugin's arguments if words run it as `kubectl pgops` or
// `kubectl-pgops`.
func pluginArgs(words []string) ([]string, bool) {
	switch {
	case len(words) >= 2 && words[0] == "kubectl" && words[1] == "pgops":
		return words[2:], true
	case len(words) >= 1 && filepath.Base(words[0]) == "kubectl-pgops":
		return words[1:], true
	}
	return nil, false
}

// TestDocsPluginCommandsParse parses every `kubectl pgops` command of the docs' shell blocks
// with the plugin's own command tree: the subcommand exists, the flags exist and take the
// values shown, and the positional arguments are as many as the command accepts.
func TestDocsPluginCommandsParse(t *testing.T) {
	checked := 0
	for _, b := range documentationBlocks(t) {
		if !isShell(b.lang) || b.skip != "" {
			continue
		}
		for _, line := range shellCommands(b.text) {
			words, err := shellWords(line)
			if !assert.NoError(t, err, "%s", b) {
				continue
			}
			args, ok := pluginArgs(words)
			if !ok {
				continue
			}
			checked++
			assert.NoError(t, parsePluginCommand(args), "%s: %s", b, line)
		}
	}
	t.Logf("%d kubectl pgops commands parsed", checked)
	assert.Positive(t, checked)
}

func parsePluginCommand(args []string) error {
	root := plugin.NewCommand(plugin.Env{Streams: plugin.Streams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard}})
	root.InitDefaultCompletionCmd(args...)
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if cmd == root {
		return fmt.Errorf("no subcommand")
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	positional := cmd.Flags().Args()
	if dash := cmd.ArgsLenAtDash(); dash >= 0 {
		positional = positional[:dash]
	}
	return cmd.ValidateArgs(positional)
}

// TestDocsMakeTargetsExist checks that every `make TARGET` in the docs' shell blocks and inline
// code names a target of the Makefile.
func TestDocsMakeTargetsExist(t *testing.T) {
	makefile, err := os.ReadFile(testenv.Path("Makefile"))
	require.NoError(t, err)
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Za-z0-9_.-]+):`).FindAllStringSubmatch(string(makefile), -1) {
		targets[m[1]] = true
	}
	makeCommand := regexp.MustCompile(`(?:^|[\s(` + "`" + `])make ((?:[A-Za-z_]+=\S*\s+)*)([a-z][a-z0-9-]*)`)
	checked := 0
	check := func(where, text string) {
		for _, m := range makeCommand.FindAllStringSubmatch(text, -1) {
			checked++
			assert.True(t, targets[m[2]], "%s: `make %s` names no Makefile target", where, m[2])
		}
	}
	inlineCode := regexp.MustCompile("`([^`\n]+)`")
	for _, path := range documentationFiles(t) {
		content, err := os.ReadFile(path)
		require.NoError(t, err)
		rel, _ := filepath.Rel(testenv.RepoRoot(), path)
		for _, m := range inlineCode.FindAllStringSubmatch(string(content), -1) {
			check(rel, m[1])
		}
	}
	for _, b := range documentationBlocks(t) {
		if isShell(b.lang) {
			check(b.String(), b.text)
		}
	}
	t.Logf("%d make commands checked", checked)
	assert.Positive(t, checked)
}

// TestScriptsNameExistingScripts checks that every script the Makefile and hack/*.sh run
// from hack/ exists: `make demo` once ran a deleted installer, which no test ran.
func TestScriptsNameExistingScripts(t *testing.T) {
	scripts, err := filepath.Glob(testenv.Path("hack", "*.sh"))
	require.NoError(t, err)
	sources := append(scripts, testenv.Path("Makefile"))
	// "$here/x.sh" in the scripts, hack/x.sh in the Makefile.
	reference := regexp.MustCompile(`(?:\$here/|\bhack/)([A-Za-z0-9_.-]+\.sh)\b`)
	checked := 0
	for _, src := range sources {
		content, err := os.ReadFile(src)
		require.NoError(t, err)
		for _, m := range reference.FindAllStringSubmatch(string(content), -1) {
			checked++
			_, err := os.Stat(testenv.Path("hack", m[1]))
			assert.NoError(t, err, "%s runs hack/%s", filepath.Base(src), m[1])
		}
	}
	t.Logf("%d script references checked", checked)
	assert.Positive(t, checked)
}

func TestParseDocBlocks(t *testing.T) {
	blocks, err := parseDocBlocks("x.md", strings.NewReader("text\n\n<!-- docs-test: skip: a fragment -->\n```yaml\na: 1\n```\n\n1. step\n\n   ```sh\n   make test\n   ```\n"))
	require.NoError(t, err)
	require.Len(t, blocks, 2)
	assert.Equal(t, docBlock{file: "x.md", line: 4, lang: "yaml", text: "a: 1\n", skip: "a fragment"}, blocks[0])
	assert.Equal(t, docBlock{file: "x.md", line: 10, lang: "sh", text: "make test\n"}, blocks[1])

	_, err = parseDocBlocks("x.md", strings.NewReader("<!-- docs-test: skip: -->\n```yaml\n```\n"))
	assert.ErrorContains(t, err, "must say why")
	_, err = parseDocBlocks("x.md", strings.NewReader("```yaml\na: 1\n"))
	assert.ErrorContains(t, err, "never closed")

	words, err := shellWords(`kubectl pgops psql db -n 'my ns' -- -c "SELECT 1" > out # comment`)
	require.NoError(t, err)
	assert.Equal(t, []string{"kubectl", "pgops", "psql", "db", "-n", "my ns", "--", "-c", "SELECT 1"}, words)
	assert.Equal(t, []string{"kubectl apply -f x.yaml", "kubectl pgops status db"},
		shellCommands("$ kubectl apply -f x.yaml && \\\n  kubectl pgops status db\n# a comment\n"))

	assert.NoError(t, parsePluginCommand([]string{"rotate-auth", "db", "--restart", "None", "--wait"}))
	assert.NoError(t, parsePluginCommand([]string{"psql", "db", "--", "-c", "SELECT 1"}))
	assert.NoError(t, parsePluginCommand([]string{"completion", "bash"}))
	assert.Error(t, parsePluginCommand([]string{"rotate-auth", "db", "--no-such-flag"}))
	assert.Error(t, parsePluginCommand([]string{"rotate-auth", "--timeout", "soon", "db"}))
	assert.Error(t, parsePluginCommand([]string{"status"}), "status needs a database")
	assert.Error(t, parsePluginCommand([]string{"frobnicate"}))
}

package integration

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// jsonDoc is docs/json.md: one section per command (or commands sharing a
// schema), each with a table of key paths and a JSON example.
type jsonDoc map[string]*jsonSection // by command, such as "blockcat ls --json"

type jsonSection struct {
	title   string
	fields  map[string]jsonField // by path, such as "volumes[].name"
	example any
}

// jsonField is one row of a section's table: the JSON types the key may
// have and whether it may be left out.
type jsonField struct {
	types    map[string]bool
	optional bool
}

var (
	jsonHeading = regexp.MustCompile("^## (.*)$")
	backticked  = regexp.MustCompile("`([^`]+)`")
	jsonRow     = regexp.MustCompile("^\\| `([^`]+)` \\| ([^|]+) \\|")
	jsonTypes   = []string{"string", "integer", "number", "boolean", "array", "object", "null"}
)

// readJSONDoc parses docs/json.md.
func readJSONDoc(t *testing.T) jsonDoc {
	t.Helper()
	b, err := os.ReadFile("../docs/json.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := jsonDoc{}
	var sec *jsonSection
	var example []string
	inExample := false
	for _, line := range strings.Split(string(b), "\n") {
		switch m := jsonHeading.FindStringSubmatch(line); {
		case m != nil:
			sec = &jsonSection{title: m[1], fields: map[string]jsonField{}}
			for _, c := range backticked.FindAllStringSubmatch(m[1], -1) {
				doc[c[1]] = sec
			}
		case sec == nil:
		case inExample && line == "```":
			inExample = false
			if err := json.Unmarshal([]byte(strings.Join(example, "\n")), &sec.example); err != nil {
				t.Fatalf("docs/json.md, %s: example: %v", sec.title, err)
			}
		case inExample:
			example = append(example, line)
		case line == "```json" && sec.example == nil:
			inExample, example = true, nil
		default:
			row := jsonRow.FindStringSubmatch(line)
			if row == nil {
				continue
			}
			f := jsonField{types: map[string]bool{}, optional: strings.Contains(row[2], "optional")}
			for _, ty := range jsonTypes {
				if regexp.MustCompile(`\b` + ty + `\b`).MatchString(row[2]) {
					f.types[ty] = true
				}
			}
			if len(f.types) == 0 {
				t.Fatalf("docs/json.md, %s: %s has no type", sec.title, row[1])
			}
			sec.fields[row[1]] = f
		}
	}
	return doc
}

// jsonPaths records the key paths of v (prefix is v's own) with the JSON
// types seen at each, and in present the objects that exist: "" for the
// top level, "a" for an object under key a, "a[]" when array a holds an
// object.
func jsonPaths(prefix string, v any, paths map[string]map[string]bool, present map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		present[prefix] = true
		for k, e := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if paths[p] == nil {
				paths[p] = map[string]bool{}
			}
			paths[p][jsonType(e)] = true
			jsonPaths(p, e, paths, present)
		}
	case []any:
		for _, e := range x {
			jsonPaths(prefix+"[]", e, paths, present)
		}
	}
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	}
	return "object"
}

// checkJSON checks v, an output (or the example) of sec's command: every
// key it has is in the table with a type the table allows, and every key
// the table does not mark optional is there wherever its parent is.
func checkJSON(t *testing.T, what string, sec *jsonSection, v any) {
	t.Helper()
	if _, ok := v.(map[string]any); !ok {
		t.Errorf("%s: not one JSON object", what)
		return
	}
	paths, present := map[string]map[string]bool{}, map[string]bool{}
	jsonPaths("", v, paths, present)
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		f, ok := sec.fields[p]
		if !ok {
			t.Errorf("%s: key %s is not in docs/json.md (%s)", what, p, sec.title)
			continue
		}
		for ty := range paths[p] {
			if !f.types[ty] && !(ty == "integer" && f.types["number"]) {
				t.Errorf("%s: key %s is %s; docs/json.md (%s) says %v", what, p, ty, sec.title, slices.Sorted(maps.Keys(f.types)))
			}
		}
	}
	for p, f := range sec.fields {
		parent := ""
		if i := strings.LastIndex(p, "."); i >= 0 {
			parent = p[:i]
		}
		if _, ok := paths[p]; !ok && !f.optional && present[parent] {
			t.Errorf("%s: lacks key %s that docs/json.md (%s) lists", what, p, sec.title)
		}
	}
}

// jsonCommands finds the commands that take --json: the commands (and
// blockd's subcommands) the usage of each binary lists whose -h shows a
// -json flag. They are named as docs/json.md names them, such as
// "blockd volume list --json".
func jsonCommands(t *testing.T) []string {
	t.Helper()
	line := regexp.MustCompile(`(?m)^  (blockcat|blockd) ([a-z]+)(?: ([a-z]+)\b)?`)
	var out []string
	for _, prog := range []string{"blockcat", "blockd"} {
		for _, m := range line.FindAllStringSubmatch(runCmd(t, nil, prog, "-h").stdout, -1) {
			args := []string{m[2]}
			if m[1] == "blockd" && (m[2] == "volume" || m[2] == "catalog") && m[3] != "" {
				args = append(args, m[3])
			}
			name := prog + " " + strings.Join(args, " ") + " --json"
			if slices.Contains(out, name) {
				continue
			}
			r := runCmd(t, nil, prog, append(args, "-h")...)
			if regexp.MustCompile(`(?m)^  --?json\b`).MatchString(r.stdout + r.stderr) {
				out = append(out, name)
			}
		}
	}
	if len(out) < 8 {
		t.Fatalf("found only %q taking --json", out)
	}
	return out
}

// TestJSONDocumented runs every command that prints JSON against real
// blockd processes and checks each output against docs/json.md, so that
// the document and the code cannot drift: every key printed is documented
// with its type, every documented key is printed, every command that
// takes --json has a section, and every section's example is checked
// against its own table.
func TestJSONDocumented(t *testing.T) {
	doc := readJSONDoc(t)
	seen := map[*jsonSection]bool{}
	for name, sec := range doc {
		if seen[sec] {
			continue
		}
		seen[sec] = true
		if sec.example == nil || len(sec.fields) == 0 {
			t.Errorf("docs/json.md, %s: want a table and a JSON example", name)
			continue
		}
		checkJSON(t, "docs/json.md example of "+sec.title, sec, sec.example)
	}
	for _, name := range jsonCommands(t) {
		if doc[name] == nil {
			t.Errorf("%s is not in docs/json.md", name)
		}
	}

	ran := map[string]bool{}
	check := func(name, out string) {
		t.Helper()
		ran[name] = true
		sec := doc[name]
		if sec == nil {
			t.Fatalf("no section for %s in docs/json.md", name)
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("%s: not JSON: %v\n%s", name, err, out)
			return
		}
		checkJSON(t, name, sec, v)
	}

	data, env := newData(t, map[string]string{"weights": "8MiB", "tokenizer": "100KiB"})
	check("blockd volume list --json", mustRun(t, nil, "blockd", "volume", "list", "--json", "--data", data))
	check("blockd volume inspect --json", mustRun(t, nil, "blockd", "volume", "inspect", "weights", "--verify", "--json", "--data", data))
	check("blockd volume inspect --json", mustRun(t, nil, "blockd", "volume", "inspect", "tokenizer", "--json", "--data", data))
	s := startServer(t, data, env)
	check("blockcat ls --json", mustRun(t, env, "blockcat", "ls", s.addr, "--json"))
	out := filepath.Join(t.TempDir(), "out")
	check("blockcat get --json", mustRun(t, env, "blockcat", "get", s.addr, "weights", "-o", out, "--json"))
	check("blockcat get --json", mustRun(t, env, "blockcat", "get", s.addr, "weights", "--offset", "4KiB", "--length", "1MiB", "--json"))
	check("blockcat bench --json", mustRun(t, env, "blockcat", "bench", s.addr, "weights", "--sizes", "4KiB,64KiB", "--duration", "100ms", "--json"))
	check("blockcat providers --json", mustRun(t, nil, "blockcat", "providers", "--json"))
	check("blockcat doctor --json", runCmd(t, nil, "blockcat", "doctor", "--json").stdout)
	check("blockd doctor --json", runCmd(t, nil, "blockd", "doctor", "--json", s.addr).stdout)
	check("blockcat selftest --json", mustRun(t, env, "blockcat", "selftest", s.addr, "--size", "1MiB", "--json"))
	check("blockcat version --json", mustRun(t, nil, "blockcat", "version", "--json"))
	check("blockd version --json", mustRun(t, nil, "blockd", "version", "--json"))

	// A striped volume over three servers sharing the key, read whole,
	// read with a server down, then scrubbed onto a spare.
	key, err := os.ReadFile(filepath.Join(data, "blockd.key"))
	if err != nil {
		t.Fatal(err)
	}
	var peers []*server
	for range 4 {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "blockd.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, startServer(t, dir, env))
	}
	src := filepath.Join(t.TempDir(), "model.bin")
	if err := os.WriteFile(src, s.volumeBytes(t, "weights")[:3000000], 0o600); err != nil {
		t.Fatal(err)
	}
	man := filepath.Join(t.TempDir(), "model.manifest")
	check("blockcat put --json", mustRun(t, env, "blockcat", "put", src, "--name", "model", "--ec", "2+1",
		"--peers", peers[0].addr+","+peers[1].addr+","+peers[2].addr, "--manifest", man, "--json"))
	check("blockcat get --manifest --json", mustRun(t, env, "blockcat", "get", "--manifest", man, "-o", out, "--json"))
	peers[1].cmd.Process.Kill()
	err = <-peers[1].exited
	peers[1].exited <- err
	check("blockcat get --manifest --json", mustRun(t, env, "blockcat", "get", "--manifest", man, "--json"))
	check("blockd scrub --json", mustRun(t, env, "blockd", "scrub", "--manifest", man, "--spare", peers[3].addr, "--json"))
	check("blockd scrub --json", mustRun(t, env, "blockd", "scrub", "--manifest", man, "--json"))

	// Needs etcd: TestReplicasFailover checks it.
	ran["blockcat put --replicas --json"] = true
	for name := range doc {
		if !ran[name] {
			t.Errorf("docs/json.md documents %s, which this test does not run", name)
		}
	}
}

// sriovdra-helm-template: the closest faithful `helm template` obtainable without the helm binary.
// It implements Helm v3's rendering behaviour (not its code) on top of text/template + sprig:
// values coalescing, --set, values.schema.json validation, Helm's engine functions and built-in
// objects, "<no value>" scrubbing and Helm's manifest ordering and "# Source:" output format.
// Limits (subcharts, CRDs dir, toToml, ...): README.md beside this file.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

type values = map[string]interface{}

// ---- options ---------------------------------------------------------------------------------

// setArg is one --set (typed: true/false/null/integers) or --set-string (every value a string).
type setArg struct {
	text  string
	typed bool
}

type options struct {
	chartDir    string
	valuesFiles []string
	sets        []setArg
	namespace   string
	release     string
	kubeVersion string
	apiVersions []string
}

const usage = "usage: sriovdra-helm-template CHART_DIR [--values F]... [--set k=v]... [--set-string k=v]... [--namespace NS] " +
	"[--release NAME] [--kube-version 1.37.0] [--api-versions G/V]..."

func parseArgs(args []string) (options, error) {
	o := options{namespace: "default", release: "release-name", kubeVersion: "1.35.0"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(a, "=")
		flag := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag needs an argument: %s", a)
			}
			i++
			return args[i], nil
		}
		var err error
		var v string
		switch name {
		case "-f", "--values":
			v, err = flag()
			o.valuesFiles = append(o.valuesFiles, v)
		case "--set":
			v, err = flag()
			o.sets = append(o.sets, setArg{v, true})
		case "--set-string":
			v, err = flag()
			o.sets = append(o.sets, setArg{v, false})
		case "-n", "--namespace":
			o.namespace, err = flag()
		case "--release", "--name-template":
			o.release, err = flag()
		case "--kube-version":
			o.kubeVersion, err = flag()
		case "-a", "--api-versions":
			v, err = flag()
			o.apiVersions = append(o.apiVersions, v)
		case "-h", "--help":
			fmt.Println(usage)
			os.Exit(0)
		default:
			if strings.HasPrefix(a, "-") || o.chartDir != "" {
				return o, fmt.Errorf("unknown argument %q\n%s", a, usage)
			}
			o.chartDir = a
		}
		if err != nil {
			return o, err
		}
	}
	if o.chartDir == "" {
		return o, errors.New(usage)
	}
	return o, nil
}

// ---- chart ---------------------------------------------------------------------------------

// Metadata is Chart.yaml with Helm's Go field names, so templates read .Chart.AppVersion.
type Metadata struct {
	Name         string            `json:"name"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []interface{}     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []interface{}     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

type chart struct {
	dir       string
	meta      Metadata
	defaults  values
	schema    []byte
	templates map[string]string // "<chart>/templates/<rel>" -> source
}

func loadChart(dir string) (*chart, error) {
	c := &chart{dir: dir, templates: map[string]string{}}
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("Chart.yaml file is missing: %w", err)
	}
	if err := yaml.Unmarshal(raw, &c.meta); err != nil {
		return nil, fmt.Errorf("cannot load Chart.yaml: %w", err)
	}
	if c.meta.Name == "" {
		return nil, errors.New("validation: chart.metadata.name is required")
	}
	if c.meta.Version == "" {
		return nil, errors.New("validation: chart.metadata.version is required")
	}
	if dirs, _ := os.ReadDir(filepath.Join(dir, "charts")); len(dirs) > 0 {
		return nil, fmt.Errorf("%s/charts: subcharts are not supported by this renderer", dir)
	}
	c.defaults, err = readValues(filepath.Join(dir, "values.yaml"), true)
	if err != nil {
		return nil, err
	}
	if s, err := os.ReadFile(filepath.Join(dir, "values.schema.json")); err == nil {
		c.schema = s
	}
	root := filepath.Join(dir, "templates")
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		c.templates[path.Join(c.meta.Name, "templates", filepath.ToSlash(rel))] = string(src)
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return c, nil
}

// ---- values --------------------------------------------------------------------------------

func readValues(file string, optional bool) (values, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		if optional && errors.Is(err, os.ErrNotExist) {
			return values{}, nil
		}
		return nil, err
	}
	v := values{}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", file, err)
	}
	if v == nil {
		v = values{}
	}
	return v, nil
}

// mergeMaps: b over a, maps merged key by key (how Helm merges successive --values files).
func mergeMaps(a, b values) values {
	out := make(values, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(values); ok {
			if am, ok := out[k].(values); ok {
				out[k] = mergeMaps(am, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce: user values over the chart's defaults; a user null deletes the key.
func coalesce(user, defaults values) values {
	out := values{}
	for k, dv := range defaults {
		uv, set := user[k]
		switch {
		case !set:
			out[k] = copyValue(dv)
		case uv == nil:
			// null removes the default
		default:
			um, uok := uv.(values)
			dm, dok := dv.(values)
			if uok && dok {
				out[k] = coalesce(um, dm)
			} else {
				if uok && dv != nil {
					fmt.Fprintf(os.Stderr, "coalesce.go: warning: skipped value for %s: Not a table.\n", k)
				}
				out[k] = dropNulls(uv)
			}
		}
	}
	for k, uv := range user {
		if _, isDefault := defaults[k]; !isDefault && uv != nil {
			out[k] = dropNulls(uv)
		}
	}
	return out
}

func dropNulls(v interface{}) interface{} {
	m, ok := v.(values)
	if !ok {
		return v
	}
	return coalesce(m, values{})
}

func copyValue(v interface{}) interface{} {
	if m, ok := v.(values); ok {
		return coalesce(values{}, m)
	}
	return v
}

// ---- --set (Helm's strvals for scalars, dotted keys, {a,b} lists and name[i]) ---------------

var indexRe = regexp.MustCompile(`^(.*)\[(\d+)\]$`)

func parseSet(s string, typed bool, into values) error {
	conv := typedVal
	if !typed {
		conv = func(v string) interface{} { return v }
	}
	for _, pair := range splitUnescaped(s, ',', true) {
		if pair == "" {
			continue
		}
		key, val, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("failed parsing --set data: key %q has no value", pair)
		}
		var v interface{}
		if strings.HasPrefix(val, "{") && strings.HasSuffix(val, "}") {
			list := []interface{}{}
			for _, item := range splitUnescaped(val[1:len(val)-1], ',', false) {
				list = append(list, conv(item))
			}
			v = list
		} else {
			v = conv(unescape(val))
		}
		if err := setPath(into, splitUnescaped(key, '.', false), v); err != nil {
			return fmt.Errorf("failed parsing --set data: %s: %w", key, err)
		}
	}
	return nil
}

// splitUnescaped splits on sep unless backslash-escaped (and, for top-level pairs, inside {}).
func splitUnescaped(s string, sep rune, braces bool) []string {
	var parts []string
	var cur strings.Builder
	depth, esc := 0, false
	for _, r := range s {
		switch {
		case esc:
			if r != sep {
				cur.WriteRune('\\')
			}
			cur.WriteRune(r)
			esc = false
			continue
		case r == '\\':
			esc = true
			continue
		case braces && r == '{':
			depth++
		case braces && r == '}':
			depth--
		case r == sep && depth == 0:
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(parts, cur.String())
}

func unescape(s string) string { return strings.ReplaceAll(s, `\,`, ",") }

func typedVal(s string) interface{} {
	switch {
	case strings.EqualFold(s, "true"):
		return true
	case strings.EqualFold(s, "false"):
		return false
	case strings.EqualFold(s, "null"):
		return nil
	case s == "0":
		return int64(0)
	}
	if s != "" && s[0] != '0' {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
	}
	return s
}

func setPath(m values, keys []string, v interface{}) error {
	k := keys[0]
	if g := indexRe.FindStringSubmatch(k); g != nil {
		idx, _ := strconv.Atoi(g[2])
		if idx > 65536 {
			return fmt.Errorf("index of %d is greater than maximum supported index of 65536", idx)
		}
		list, _ := m[g[1]].([]interface{})
		for len(list) <= idx {
			list = append(list, nil)
		}
		if len(keys) == 1 {
			list[idx] = v
		} else {
			sub, _ := list[idx].(values)
			if sub == nil {
				sub = values{}
			}
			if err := setPath(sub, keys[1:], v); err != nil {
				return err
			}
			list[idx] = sub
		}
		m[g[1]] = list
		return nil
	}
	if len(keys) == 1 {
		m[k] = v
		return nil
	}
	sub, _ := m[k].(values)
	if sub == nil {
		sub = values{}
		m[k] = sub
	}
	return setPath(sub, keys[1:], v)
}

// ---- schema --------------------------------------------------------------------------------

func validateSchema(c *chart, vals values) error {
	if c.schema == nil {
		return nil
	}
	doc, err := json.Marshal(vals)
	if err != nil {
		return err
	}
	schema, err := yaml.YAMLToJSON(c.schema)
	if err != nil {
		return fmt.Errorf("%s/values.schema.json: %w", c.meta.Name, err)
	}
	res, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s",
			c.meta.Name, err)
	}
	if res.Valid() {
		return nil
	}
	var b strings.Builder
	for _, e := range res.Errors() {
		fmt.Fprintf(&b, "- %s\n", e)
	}
	return fmt.Errorf("values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n%s",
		c.meta.Name, b.String())
}

// ---- built-in objects ----------------------------------------------------------------------

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

type Capabilities struct {
	APIVersions VersionSet
	KubeVersion KubeVersion
	HelmVersion map[string]string
}

// defaultAPIVersions: the built-in group/versions of a current cluster (helm template's offline guess).
var defaultAPIVersions = []string{
	"v1", "admissionregistration.k8s.io/v1", "apiextensions.k8s.io/v1", "apiregistration.k8s.io/v1",
	"apps/v1", "authentication.k8s.io/v1", "authorization.k8s.io/v1", "autoscaling/v1", "autoscaling/v2",
	"batch/v1", "certificates.k8s.io/v1", "coordination.k8s.io/v1", "discovery.k8s.io/v1",
	"events.k8s.io/v1", "flowcontrol.apiserver.k8s.io/v1", "networking.k8s.io/v1", "node.k8s.io/v1",
	"policy/v1", "rbac.authorization.k8s.io/v1", "resource.k8s.io/v1", "scheduling.k8s.io/v1",
	"storage.k8s.io/v1",
}

func capabilities(o options) (Capabilities, error) {
	v := strings.TrimPrefix(o.kubeVersion, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return Capabilities{}, fmt.Errorf("invalid kube version %q: expected MAJOR.MINOR[.PATCH]", o.kubeVersion)
	}
	for _, p := range parts[:2] {
		if _, err := strconv.Atoi(p); err != nil {
			return Capabilities{}, fmt.Errorf("invalid kube version %q: %v", o.kubeVersion, err)
		}
	}
	if len(parts) == 2 {
		v += ".0"
	}
	return Capabilities{
		APIVersions: append(VersionSet(append([]string{}, defaultAPIVersions...)), o.apiVersions...),
		KubeVersion: KubeVersion{Version: "v" + v, Major: parts[0], Minor: parts[1], GitVersion: "v" + v},
		HelmVersion: map[string]string{"Version": "v3-compatible (sriovdra-helm-template)"},
	}, nil
}

// Files is .Files: Get reads a file of the chart (outside templates/), "" when absent.
type Files struct{ dir string }

func (f Files) Get(name string) string {
	clean := path.Clean("/" + name)
	raw, err := os.ReadFile(filepath.Join(f.dir, filepath.FromSlash(clean)))
	if err != nil {
		return ""
	}
	return string(raw)
}

func (f Files) GetBytes(name string) []byte { return []byte(f.Get(name)) }

// ---- engine --------------------------------------------------------------------------------

const (
	errStart = "HELM_ERR_START"
	errEnd   = "HELM_ERR_END"
)

var wrappedErr = regexp.MustCompile(`(?s)` + errStart + `(.*)` + errEnd)

func funcMap(t *template.Template, depth map[string]int) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = func(v interface{}) string {
		out, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	f["mustToYaml"] = func(v interface{}) (string, error) {
		out, err := yaml.Marshal(v)
		return strings.TrimSuffix(string(out), "\n"), err
	}
	f["fromYaml"] = func(s string) values {
		m := values{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromYamlArray"] = func(s string) []interface{} {
		var a []interface{}
		if err := yaml.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["toJson"] = func(v interface{}) string {
		out, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(out)
	}
	f["mustToJson"] = func(v interface{}) (string, error) {
		out, err := json.Marshal(v)
		return string(out), err
	}
	f["fromJson"] = func(s string) values {
		m := values{}
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(s string) []interface{} {
		var a []interface{}
		if err := json.Unmarshal([]byte(s), &a); err != nil {
			a = []interface{}{err.Error()}
		}
		return a
	}
	f["required"] = func(msg string, v interface{}) (interface{}, error) {
		if s, isStr := v.(string); v == nil || (isStr && s == "") {
			return v, errors.New(errStart + msg + errEnd)
		}
		return v, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(errStart + msg + errEnd) }
	// helm template talks to no cluster: lookup finds nothing
	f["lookup"] = func(string, string, string, string) (values, error) { return values{}, nil }
	f["include"] = func(name string, data interface{}) (string, error) {
		if depth[name] > 1000 {
			return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf bytes.Buffer
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	f["tpl"] = func(src string, data interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		name := "gotpl"
		if root, ok := data.(values); ok {
			if tm, ok := root["Template"].(values); ok {
				if n, ok := tm["Name"].(string); ok {
					name = n
				}
			}
		}
		clone.Funcs(funcMap(clone, depth))
		if _, err := clone.New(name).Parse(src); err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", src, err)
		}
		var buf bytes.Buffer
		if err := clone.ExecuteTemplate(&buf, name, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", src, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	return f
}

// parseOrder is Helm's: deeper paths first, then reverse lexical (later definitions win).
func parseOrder(names []string) []string {
	out := append([]string{}, names...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		ca, cb := strings.Count(a, "/"), strings.Count(b, "/")
		if ca != cb {
			return ca > cb
		}
		return a > b
	})
	return out
}

// locatedError turns a text/template error into Helm's "... at (<file>:<line>:<col>): msg".
func locatedError(kind string, err error) error {
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 || tokens[0] != "template" {
		return err
	}
	msg := tokens[2]
	if m := wrappedErr.FindStringSubmatch(msg); m != nil {
		msg = m[1]
	}
	return fmt.Errorf("%s at (%s): %s", kind, tokens[1], msg)
}

func render(c *chart, top values) (map[string]string, error) {
	t := template.New("gotpl").Option("missingkey=zero")
	depth := map[string]int{}
	t.Funcs(funcMap(t, depth))
	names := make([]string, 0, len(c.templates))
	for n := range c.templates {
		names = append(names, n)
	}
	for _, n := range parseOrder(names) {
		if _, err := t.New(n).Parse(c.templates[n]); err != nil {
			return nil, locatedError("parse error", err)
		}
	}
	out := map[string]string{}
	for _, n := range parseOrder(names) {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		vals := values{}
		for k, v := range top {
			vals[k] = v
		}
		vals["Template"] = values{"Name": n, "BasePath": path.Join(c.meta.Name, "templates")}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, n, vals); err != nil {
			return nil, locatedError("execution error", err)
		}
		out[n] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return out, nil
}

// ---- output (Helm's manifest sorting) -------------------------------------------------------

type manifest struct {
	name, content, kind string
	hook                bool
}

type simpleHead struct {
	Kind     string `json:"kind"`
	Metadata *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

var installOrder = []string{
	"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList",
	"RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod", "ReplicationController",
	"ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
	"IngressClass", "Ingress", "APIService", "MutatingWebhookConfiguration",
	"ValidatingWebhookConfiguration",
}

var docSep = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func sortManifests(files map[string]string) ([]manifest, error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var all []manifest
	for _, p := range paths {
		content := files[p]
		if strings.HasSuffix(p, "NOTES.txt") || strings.TrimSpace(content) == "" {
			continue
		}
		for _, doc := range docSep.Split(strings.TrimSpace(content), -1) {
			doc = strings.TrimSpace(doc)
			if doc == "" {
				continue
			}
			var head simpleHead
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, fmt.Errorf("YAML parse error on %s: %w", p, err)
			}
			hook := false
			if head.Metadata != nil {
				_, hook = head.Metadata.Annotations["helm.sh/hook"]
			}
			all = append(all, manifest{name: p, content: doc, kind: head.Kind, hook: hook})
		}
	}
	rank := map[string]int{}
	for i, k := range installOrder {
		rank[k] = i
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		ra, aok := rank[a.kind]
		rb, bok := rank[b.kind]
		switch {
		case aok && bok && ra != rb:
			return ra < rb
		case aok != bok:
			return aok
		case !aok && a.kind != b.kind:
			return a.kind < b.kind
		}
		return a.name < b.name
	})
	return all, nil
}

func run(o options) error {
	c, err := loadChart(o.chartDir)
	if err != nil {
		return err
	}
	user := values{}
	for _, f := range o.valuesFiles {
		v, err := readValues(f, false)
		if err != nil {
			return err
		}
		user = mergeMaps(user, v)
	}
	// Helm applies every --set before every --set-string, whatever their order on the command line
	for _, typed := range []bool{true, false} {
		for _, s := range o.sets {
			if s.typed != typed {
				continue
			}
			if err := parseSet(s.text, s.typed, user); err != nil {
				return err
			}
		}
	}
	vals := coalesce(user, c.defaults)
	if err := validateSchema(c, vals); err != nil {
		return err
	}
	caps, err := capabilities(o)
	if err != nil {
		return err
	}
	top := values{
		"Values": vals,
		"Release": values{"Name": o.release, "Namespace": o.namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Chart":        c.meta,
		"Capabilities": caps,
		"Files":        Files{dir: c.dir},
	}
	files, err := render(c, top)
	if err != nil {
		return err
	}
	ms, err := sortManifests(files)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, hooks := range []bool{false, true} {
		for _, m := range ms {
			if m.hook == hooks {
				fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.name, m.content)
			}
		}
	}
	_, err = os.Stdout.WriteString(b.String())
	return err
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err == nil {
		err = run(o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %s\n", strings.TrimRight(err.Error(), "\n"))
		os.Exit(1)
	}
}

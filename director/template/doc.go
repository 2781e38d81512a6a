// Package template renders a release job's templates for one instance.
//
// Templates are Go text/template files. The director renders every job of
// every instance before any VM is touched, so a template error fails the
// plan, not the rollout. The functions available in a template are a public
// contract (docs/templates.md):
//
//	{{ p "a.b" }}                 the property, else its spec default; fails naming the property
//	{{ p "a.b" "fallback" }}      the property, else its spec default, else the fallback
//	{{ if_p "a.b" }}…{{ end }}    renders the block only when every named property is set
//	{{ (link "db").Instances }}   instances of a consumed link (.Address .ID .Index .AZ .Name .Bootstrap)
//	{{ (link "db").P "port" }}    a property the providing job exposes on the link
//	{{ if_link "db" }}…{{ end }}  renders the block only when the (optional) link is present
//	{{ spec.Name }} …             the instance: .Name .ID .Index .AZ .Address .IP .Deployment .Bootstrap .NetworkIPs
//	toJSON toYAML quote join indent
//
// `if_p` and `if_link` are ordinary functions returning a bool; when one is
// the first word of an action ({{ if_p "a" }}) the renderer reads it as
// {{ if if_p "a" }}, so both spellings work, with {{ else }} as usual.
//
// Properties follow BOSH: a job sees only the properties its spec declares;
// each declared dotted name ("a.b") takes the manifest's value at that path in
// the nested property map, else the spec default. Files rendered under bin/
// are executable (0755); every other file is 0644.
//
// BOSH jobs (a template named *.erb, or a monit file; see [IsERB]) are ERB
// instead, rendered with BOSH's template context by [ERB]: one long-lived
// ruby process, running the embedded helper erb/render.rb, fed one request
// per job and instance. docs/bosh-compat.md describes the context.
//
// The entry point is [Render]; its result, [Rendered], carries the files, a
// content hash (Rendered.Hash) used for change detection, and a deterministic
// tar.gz ([Rendered.Archive]) that the agent installs under
// /var/vcap/jobs/<job>/.
package template

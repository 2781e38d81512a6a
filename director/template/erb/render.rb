# Renders BOSH job templates (ERB) for the Compleat director.
#
# One process serves many requests: the director writes one JSON request
# per line on stdin and reads one JSON answer per line on stdout.
#
#   request: {"job": "web", "templates": [{"name": "ctl.erb", "text": "..."}],
#             "context": {"properties": {...}, "spec": {...}, "links": {...}}}
#   answer:  {"files": ["...", ...]}   (one per template, in order)
#        or  {"error": {"template": "ctl.erb", "line": 3, "message": "..."}}
#
# The context follows BOSH's template evaluation context: p (defaults and
# the multi-name form), if_p (several names, .else), properties, spec (an
# open struct), link(name) with instances, address, p and if_p (with .else
# and .else_if_p), if_link,
# and esc (shell escaping). Compiled templates are kept per job, template
# and text, so rendering the same template for many instances parses it
# once.
require 'erb'
require 'json'
require 'ostruct'
require 'shellwords'
require 'digest'

module Compleat
  class UnknownProperty < StandardError; end
  class UnknownLink < StandardError; end

  # Recursive open struct: spec.networks.default.ip, like BOSH's.
  def self.struct(v)
    case v
    when Hash then OpenStruct.new(v.each_with_object({}) { |(k, x), h| h[k] = struct(x) })
    when Array then v.map { |x| struct(x) }
    else v
    end
  end

  def self.lookup(collection, name)
    keys = name.to_s.split('.')
    ref = collection
    keys.each do |key|
      return nil unless ref.is_a?(Hash) && ref.key?(key)
      ref = ref[key]
    end
    ref
  end

  def self.p(props, what, args)
    names = Array(args[0])
    names.each do |n|
      v = lookup(props, n)
      return v unless v.nil?
    end
    return args[1] if args.length == 2
    raise UnknownProperty, "Can't find property '#{names.join("', '")}'#{what}"
  end

  # if_p yields the values when every name is set; what it returns carries
  # on the chain: .else { } and .else_if_p(names) { }, as BOSH's.
  def self.if_p(owner, props, names)
    values = names.map { |n| lookup(props, n) }
    return ActiveElseBlock.new(owner) if values.any?(&:nil?)
    yield(*values)
    InactiveElseBlock.new
  end

  class ActiveElseBlock
    def initialize(owner)
      @owner = owner
    end

    def else
      yield
    end

    def else_if_p(*names, &block)
      @owner.if_p(*names, &block)
    end
  end

  class InactiveElseBlock
    def else; end

    def else_if_p(*_names)
      InactiveElseBlock.new
    end
  end

  class LinkInstance
    attr_reader :name, :index, :id, :az, :address, :bootstrap

    def initialize(h)
      @name = h['name']
      @index = h['index']
      @id = h['id']
      @az = h['az']
      @address = h['address']
      @bootstrap = h['bootstrap']
    end
  end

  class Link
    attr_reader :name, :instances, :properties

    def initialize(name, h)
      @name = name
      @instances = (h['instances'] || []).map { |i| LinkInstance.new(i) }
      @properties = h['properties'] || {}
      @address = h['address']
    end

    # address is the first instance's address (there is no DNS name to
    # give); BOSH's criteria azs: narrows it to an instance in those zones.
    def address(criteria = {})
      azs = criteria[:azs] || criteria['azs']
      if azs
        i = @instances.find { |x| azs.include?(x.az) }
        return i && i.address
      end
      @address || (@instances.first && @instances.first.address)
    end

    def p(*args)
      Compleat.p(@properties, " in link '#{@name}'", args)
    end

    def if_p(*names, &block)
      Compleat.if_p(self, @properties, names, &block)
    end
  end

  # What `self` is in a template.
  class Context
    attr_reader :spec, :raw_properties, :properties, :name, :index

    def initialize(c)
      @raw_properties = c['properties'] || {}
      @properties = Compleat.struct(@raw_properties)
      @spec = Compleat.struct((c['spec'] || {}).merge('properties' => @raw_properties))
      @name = @spec.job && @spec.job.name
      @index = @spec.index
      @links = c['links'] || {}
    end

    def get_binding
      binding
    end

    def p(*args)
      Compleat.p(@raw_properties, '', args)
    end

    def if_p(*names, &block)
      Compleat.if_p(self, @raw_properties, names, &block)
    end

    def link(name)
      l = @links[name]
      raise UnknownLink, "Can't find link '#{name}'" if l.nil?
      Link.new(name, l)
    end

    def if_link(name)
      l = @links[name]
      return ActiveElseBlock.new(self) if l.nil?
      yield Link.new(name, l)
      InactiveElseBlock.new
    end

    def esc(x)
      Shellwords.escape(x.to_s)
    end
  end

  MAX_FILE = 16 << 20 # bytes of one rendered file

  @compiled = {}
  @next = 0

  def self.method_for(job, t)
    key = Digest::SHA256.hexdigest("#{job}\0#{t['name']}\0#{t['text']}")
    @compiled[key] ||= begin
      @next += 1
      meth = "__compleat_template_#{@next}"
      erb = ERB.new(t['text'], trim_mode: '-')
      erb.def_method(Context, meth, "#{job}/#{t['name']}")
      meth
    end
  end

  # line finds the template's line in an exception: the first backtrace
  # entry (or syntax error message) in the template's file.
  def self.line(e, file)
    texts = [e.message] + (e.backtrace || [])
    texts.each do |s|
      m = s.match(/#{Regexp.escape(file)}:(\d+)/)
      return m[1].to_i if m
    end
    0
  end

  def self.render(req)
    job = req['job'].to_s
    ctx = Context.new(req['context'] || {})
    files = []
    (req['templates'] || []).each do |t|
      file = "#{job}/#{t['name']}"
      begin
        out = ctx.send(method_for(job, t))
        raise ArgumentError, "rendered #{out.bytesize} bytes, more than #{MAX_FILE} allowed" if out.bytesize > MAX_FILE
        out = out.dup.force_encoding('UTF-8')
        raise ArgumentError, 'rendered text is not valid UTF-8' unless out.valid_encoding?
        files << out
      rescue ScriptError, StandardError, NoMemoryError, SystemStackError => e
        msg = e.message.sub(/\A#{Regexp.escape(file)}:\d+:\s*/, '').lines.first.to_s.strip
        msg = "#{e.class}: #{msg}" unless e.is_a?(UnknownProperty) || e.is_a?(UnknownLink)
        return { 'error' => { 'template' => t['name'], 'line' => line(e, file), 'message' => msg } }
      end
    end
    { 'files' => files }
  end
end

$stdout.sync = true
while (line = $stdin.gets)
  begin
    answer = Compleat.render(JSON.parse(line))
  rescue JSON::ParserError => e
    answer = { 'error' => { 'template' => '', 'line' => 0, 'message' => "bad request: #{e.message}" } }
  end
  $stdout.write(JSON.generate(answer) + "\n")
end

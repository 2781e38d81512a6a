# Shared by kv-server and kv-peers: a minimal HTTP/1.1 responder.
require 'socket'

module KV
  def self.serve(listen)
    host, _, port = listen.rpartition(':')
    server = TCPServer.new(host, Integer(port))
    $stdout.sync = true
    puts "listening on #{listen}"
    loop do
      client = server.accept
      begin
        request = client.gets.to_s
        while (line = client.gets) && line != "\r\n"; end
        status, body = yield(request.split(' ')[1].to_s)
        client.write("HTTP/1.1 #{status}\r\nContent-Type: text/plain\r\nContent-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
      rescue StandardError => e
        warn "request failed: #{e}"
      ensure
        client.close
      end
    end
  end
end

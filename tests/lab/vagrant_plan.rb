# Loads vm-lab/Vagrantfile with a stand-in for Vagrant's configuration objects and prints, as JSON, the
# machines it defines: names, order, networks and provisioners with their arguments. Used by
# tests/lab/test_vagrantfile.py to check what the Vagrantfile asks for without any provider installed.
# Usage: ruby vagrant_plan.rb PATH/TO/Vagrantfile      (FAKE_HOST_CPU=arm64 pretends to run on that CPU)
require "json"
require "rbconfig"

RbConfig::CONFIG["host_cpu"] = ENV["FAKE_HOST_CPU"] if ENV["FAKE_HOST_CPU"]

module Vagrant
  # Provider and ssh settings: accepted and ignored.
  class Anything
    def method_missing(*_args)
      self
    end

    def respond_to_missing?(*_args)
      true
    end

    def vmx
      @vmx ||= {}
    end
  end

  class VM
    attr_reader :data

    def initialize
      @data = { "networks" => [], "provisioners" => [], "machines" => [] }
    end

    def box=(value)
      @data["box"] = value
    end

    def hostname=(value)
      @data["hostname"] = value
    end

    def synced_folder(*_args, **_opts); end

    def provider(*_args)
      yield Anything.new if block_given?
    end

    def network(type, **opts)
      @data["networks"] << { "type" => type }.merge(opts.transform_keys(&:to_s))
    end

    def provision(name, **opts)
      @data["provisioners"] << { "name" => name, "path" => opts[:path], "args" => opts[:args] || [] }
    end

    def define(name, **opts)
      machine = Config.new
      yield machine
      @data["machines"] << { "name" => name, "primary" => !!opts[:primary] }.merge(machine.vm.data.reject { |k, _| k == "machines" })
    end
  end

  class Config
    attr_reader :vm, :ssh

    def initialize
      @vm = VM.new
      @ssh = Anything.new
    end
  end

  def self.require_version(*_args); end

  def self.configure(_version)
    config = Config.new
    yield config
    $plan = config
  end
end

load ARGV.fetch(0)
puts JSON.generate("box" => $plan.vm.data["box"], "machines" => $plan.vm.data["machines"],
                   "no_parallel" => ENV["VAGRANT_NO_PARALLEL"])

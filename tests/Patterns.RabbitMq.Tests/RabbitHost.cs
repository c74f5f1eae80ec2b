using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Transport;

namespace Patterns.RabbitMq.Tests;

/// <summary>A generic host on the RabbitMQ transport, built the way an application builds one, with a name prefix of its own.</summary>
internal sealed class RabbitHost : IAsyncDisposable
{
    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private RabbitHost(IHost host) => Host = host;

    public IHost Host { get; }

    public IServiceProvider Services => Host.Services;

    public T Get<T>()
        where T : notnull => Host.Services.GetRequiredService<T>();

    public static HostApplicationBuilder CreateBuilder(string prefix, Action<RabbitMqTransportOptions>? options = null)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Logging.ClearProviders();
        if (Environment.GetEnvironmentVariable("PATTERNS_TEST_LOG") == "1")
        {
            builder.Logging.AddSimpleConsole().SetMinimumLevel(LogLevel.Debug);
        }

        builder.AddPatterns(p => p.UseRabbitMq(o =>
        {
            Broker.Apply(o, prefix);
            options?.Invoke(o);
        }));
        return builder;
    }

    public static Task<RabbitHost> StartAsync(string test, Action<HostApplicationBuilder> configure, Action<RabbitMqTransportOptions>? options = null) =>
        StartWithPrefixAsync(Broker.Prefix(test), configure, options);

    /// <summary>Starts a host on a given prefix, so that several hosts (standing in for processes) share one topology.</summary>
    public static async Task<RabbitHost> StartWithPrefixAsync(string prefix, Action<HostApplicationBuilder> configure, Action<RabbitMqTransportOptions>? options = null)
    {
        await Broker.RequireAsync();
        var builder = CreateBuilder(prefix, options);
        configure(builder);
        var host = builder.Build();
        var started = new RabbitHost(host);
        try
        {
            await host.StartAsync();
        }
        catch
        {
            await started.DisposeAsync();
            throw;
        }

        return started;
    }

    public async ValueTask DisposeAsync()
    {
        var transport = Host.Services.GetRequiredService<MessageTransport>();
        try
        {
            using var stop = new CancellationTokenSource(Wait);
            await Host.StopAsync(stop.Token);
        }
        finally
        {
            if (Host is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
            else
            {
                Host.Dispose();
            }

            await Broker.DeleteTopologyAsync(transport);
        }
    }
}

/// <summary>Collects what handlers saw and completes when enough has arrived.</summary>
internal sealed class Collector<T>
{
    private readonly List<T> _items = [];
    private readonly Lock _gate = new();
    private TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _expected = int.MaxValue;

    public IReadOnlyList<T> Items
    {
        get
        {
            lock (_gate)
            {
                return [.. _items];
            }
        }
    }

    public void Add(T item)
    {
        lock (_gate)
        {
            _items.Add(item);
            if (_items.Count >= _expected)
            {
                _done.TrySetResult();
            }
        }
    }

    public Task WaitForAsync(int count)
    {
        lock (_gate)
        {
            _expected = count;
            if (_items.Count >= count)
            {
                return Task.CompletedTask;
            }

            if (_done.Task.IsCompleted)
            {
                _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            return _done.Task.WaitAsync(RabbitHost.Wait);
        }
    }
}

using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Wolverine;

namespace Patterns.Benchmarks;

/// <summary>Starts Wolverine the way its docs show (a host with <c>UseWolverine</c>), with only the given handler types.</summary>
public static class WolverineBench
{
    /// <summary>Builds and starts a host running Wolverine with <paramref name="handlers"/> only (conventional discovery off, so the other peers' handlers in this assembly are not picked up).</summary>
    public static async Task<IHost> StartAsync(Type[] handlers, Action<WolverineOptions> configure, Action<IServiceCollection>? services = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        services?.Invoke(builder.Services);
        builder.UseWolverine(o =>
        {
            o.ApplicationAssembly = typeof(WolverineBench).Assembly;
            o.UseRuntimeCompilation();
            o.Discovery.DisableConventionalDiscovery();
            foreach (var handler in handlers)
            {
                o.Discovery.IncludeType(handler);
            }

            configure(o);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

}

/// <summary>A started Wolverine host and the <see cref="IMessageBus"/> of one scope of it, as a benchmark holds them.</summary>
public sealed class WolverineSession : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly IServiceScope _scope;

    private WolverineSession(IHost host)
    {
        _host = host;
        _scope = host.Services.CreateScope();
        Bus = _scope.ServiceProvider.GetRequiredService<IMessageBus>();
    }

    /// <summary>Gets the bus.</summary>
    public IMessageBus Bus { get; }

    /// <summary>Starts a host with <paramref name="handler"/> only and <paramref name="signal"/> registered for it.</summary>
    public static async Task<WolverineSession> StartAsync(Type handler, Action<WolverineOptions> configure, BatchSignal? signal = null) =>
        new(await WolverineBench.StartAsync([handler], configure, signal is null ? null : s => s.AddSingleton(signal)));

    /// <summary>Stops the host.</summary>
    public async ValueTask DisposeAsync()
    {
        _scope.Dispose();
        await _host.StopAsync();
        _host.Dispose();
    }
}

/// <summary>Wolverine's handler of <see cref="Ping"/>: counts it.</summary>
public static class WolverinePingHandler
{
    public static void Handle(Ping ping, BatchSignal signal) => signal.Signal();
}

/// <summary>Wolverine's handler of <see cref="Job"/>: counts it.</summary>
public static class WolverineJobHandler
{
    public static void Handle(Job job, BatchSignal signal) => signal.Signal();
}

/// <summary>Wolverine's handler of <see cref="Req"/>: answers with a cached response.</summary>
public static class WolverineEchoHandler
{
    private static readonly Resp Response = new(42);

    public static Resp Handle(Req request) => Response;
}

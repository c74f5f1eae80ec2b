using BenchmarkDotNet.Attributes;
using MassTransit;
using MassTransit.Mediator;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Patterns.RequestResponse;
using Wolverine;

namespace Patterns.Benchmarks;

/// <summary>
/// One request answered by an in-process handler that completes synchronously with a cached response,
/// so any allocation measured is the framework's own. One operation is one call; each invocation makes a batch.
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class RequestResponseBenchmarks
{
    /// <summary>Calls per invocation for the direct call and Patterns.</summary>
    public const int Calls = 1_000;

    /// <summary>Calls per invocation for MassTransit's mediator, which is much slower.</summary>
    public const int MassTransitCalls = 100;

    private readonly Req _request = new(1);

    private IRequestHandler<Req, Resp>? _handler;

    private ServiceProvider? _patternsServices;
    private Patterns.RequestResponse.IRequestClient? _client;

    private ServiceProvider? _massTransitServices;
    private IRequestClient<Req>? _massTransitClient;

    private WolverineSession? _wolverine;

    /// <summary>Gets the sum of the response ids, so the calls cannot be optimized away.</summary>
    public int Sink { get; private set; }

    [GlobalSetup(Target = nameof(DirectCall))]
    public void SetupDirect() => _handler = new EchoHandler();

    [GlobalSetup(Target = nameof(Patterns))]
    public async Task SetupPatterns()
    {
        var services = new ServiceCollection();
        services.AddRequestResponse(r => r.AddHandler<Req, Resp, EchoHandler>(lifetime: ServiceLifetime.Singleton));
        _patternsServices = services.BuildServiceProvider();
        await Hosting.StartAsync(_patternsServices);
        _client = _patternsServices.GetRequiredService<Patterns.RequestResponse.IRequestClient>();
    }

    [GlobalCleanup(Target = nameof(Patterns))]
    public Task CleanupPatterns() => Hosting.StopAndDisposeAsync(_patternsServices);

    [GlobalSetup(Target = nameof(MassTransitMediator))]
    public void SetupMassTransit()
    {
        var services = new ServiceCollection();
        services.AddMediator(cfg => cfg.AddConsumer<EchoConsumer>());
        _massTransitServices = services.BuildServiceProvider();
        _massTransitClient = _massTransitServices.GetRequiredService<IMediator>().CreateRequestClient<Req>();
    }

    [GlobalCleanup(Target = nameof(MassTransitMediator))]
    public Task CleanupMassTransit() => Hosting.StopAndDisposeAsync(_massTransitServices);

    [GlobalSetup(Target = nameof(WolverineInvokeAsync))]
    public async Task SetupWolverine() =>
        _wolverine = await WolverineSession.StartAsync(typeof(WolverineEchoHandler), o => o.Durability.Mode = DurabilityMode.MediatorOnly); // its mediator mode

    [GlobalCleanup(Target = nameof(WolverineInvokeAsync))]
    public async Task CleanupWolverine()
    {
        if (_wolverine is not null)
        {
            await _wolverine.DisposeAsync();
        }
    }

    /// <summary>The floor: the handler's HandleAsync called directly and awaited.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Calls)]
    public async Task DirectCall()
    {
        var handler = _handler!;
        var request = _request;
        var sum = 0;
        for (var i = 0; i < Calls; i++)
        {
            sum += (await handler.HandleAsync(request, CancellationToken.None)).Id;
        }

        Sink = sum;
    }

    /// <summary>Patterns' IRequestClient with a singleton handler, in-process.</summary>
    [Benchmark(OperationsPerInvoke = Calls)]
    public async Task Patterns()
    {
        var client = _client!;
        var request = _request;
        var sum = 0;
        for (var i = 0; i < Calls; i++)
        {
            sum += (await client.SendAsync<Req, Resp>(request)).Id;
        }

        Sink = sum;
    }

    /// <summary>MassTransit's mediator: a request client and a consumer that responds.</summary>
    [Benchmark(OperationsPerInvoke = MassTransitCalls)]
    public async Task MassTransitMediator()
    {
        var client = _massTransitClient!;
        var request = _request;
        var sum = 0;
        for (var i = 0; i < MassTransitCalls; i++)
        {
            var response = await client.GetResponse<Resp>(request);
            sum += response.Message.Id;
        }

        Sink = sum;
    }

    /// <summary>Wolverine 6.64.2: <c>IMessageBus.InvokeAsync&lt;Resp&gt;</c> (in-process, MediatorOnly), a static handler returning the cached response.</summary>
    [Benchmark(OperationsPerInvoke = Calls)]
    public async Task WolverineInvokeAsync()
    {
        var bus = _wolverine!.Bus;
        var request = _request;
        var sum = 0;
        for (var i = 0; i < Calls; i++)
        {
            sum += (await bus.InvokeAsync<Resp>(request)).Id;
        }

        Sink = sum;
    }
}

/// <summary>A request handler that completes synchronously with a cached response.</summary>
public sealed class EchoHandler : IRequestHandler<Req, Resp>
{
    private static readonly Resp Response = new(42);

    public ValueTask<Resp> HandleAsync(Req request, CancellationToken cancellationToken) => new(Response);
}

/// <summary>The MassTransit consumer that answers <see cref="Req"/> with a cached response.</summary>
public sealed class EchoConsumer : IConsumer<Req>
{
    private static readonly Resp Response = new(42);

    public Task Consume(ConsumeContext<Req> context) => context.RespondAsync(Response);
}

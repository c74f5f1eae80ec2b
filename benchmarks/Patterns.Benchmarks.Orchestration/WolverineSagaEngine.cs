using JasperFx;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Wolverine;
using Wolverine.Postgresql;
using Wolverine.Sqlite;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>Starts a chain saga of <paramref name="Steps"/> steps.</summary>
public sealed record StartChain(string Id, int Steps);

/// <summary>One step of a chain saga, correlated by <paramref name="ChainSagaId"/>.</summary>
public sealed record ChainStep(string ChainSagaId, int Number);

/// <summary>Counts finished sagas and completes when the expected number has finished.</summary>
public sealed class SagaCountdown
{
    private TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _remaining;

    public Task Expect(int count)
    {
        _done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Volatile.Write(ref _remaining, count);
        return _done.Task;
    }

    public void Finished()
    {
        if (Interlocked.Decrement(ref _remaining) == 0)
        {
            _done.TrySetResult();
        }
    }
}

/// <summary>A durable Wolverine saga: each step is a message that loads the saga, updates it and sends the next step (cascading), in one transaction.</summary>
public sealed class ChainSaga : Saga
{
    public string? Id { get; set; }

    public int Steps { get; set; }

    public int Done { get; set; }

    public static (ChainSaga, ChainStep) Start(StartChain start) => (new ChainSaga { Id = start.Id, Steps = start.Steps }, new ChainStep(start.Id, 1));

    public ChainStep? Handle(ChainStep step, SagaCountdown countdown)
    {
        Done = step.Number;
        if (Done < Steps)
        {
            return new ChainStep(Id!, Done + 1);
        }

        MarkCompleted();
        countdown.Finished();
        return null;
    }
}

/// <summary>Wolverine's durable sagas on SQLite or PostgreSQL (durable local queues, transactional outbox), as its docs set them up.</summary>
public sealed class WolverineSagaEngine : IAsyncDisposable
{
    private readonly IHost _host;
    private readonly string? _file;
    private readonly string? _schema;
    private readonly SagaCountdown _countdown;
    private int _next;

    private WolverineSagaEngine(IHost host, string? file, string? schema)
    {
        _host = host;
        _file = file;
        _schema = schema;
        _countdown = host.Services.GetRequiredService<SagaCountdown>();
    }

    public static async Task<WolverineSagaEngine> StartAsync(Store store)
    {
        var file = store == Store.Sqlite ? Path.Combine(Path.GetTempPath(), $"wolverine-saga-{Guid.NewGuid():N}.db") : null;
        var schema = store == Store.Postgres ? "wvs_" + Guid.NewGuid().ToString("N")[..16] : null;
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<SagaCountdown>();
        builder.UseWolverine(o =>
        {
            o.ApplicationAssembly = typeof(WolverineSagaEngine).Assembly;
            o.UseRuntimeCompilation();
            o.Discovery.DisableConventionalDiscovery();
            o.Discovery.IncludeType(typeof(ChainSaga));
            o.Durability.Mode = DurabilityMode.Solo;
            if (file is not null)
            {
                o.PersistMessagesWithSqlite($"Data Source={file}");
            }
            else
            {
                o.PersistMessagesWithPostgresql(PatternsEngine.PostgresConnection, schema!);
            }

            o.AutoBuildMessageStorageOnStartup = AutoCreate.CreateOrUpdate;
            o.Policies.AutoApplyTransactions();
            o.Policies.UseDurableLocalQueues();
        });
        var host = builder.Build();
        await host.StartAsync();
        return new WolverineSagaEngine(host, file, schema);
    }

    /// <summary>Starts <paramref name="count"/> sagas of <paramref name="steps"/> steps at once and waits until every one has completed.</summary>
    public async Task RunAsync(int count, int steps = 5)
    {
        var all = _countdown.Expect(count);
        using var scope = _host.Services.CreateScope();
        var bus = scope.ServiceProvider.GetRequiredService<IMessageBus>();
        for (var i = 0; i < count; i++)
        {
            await bus.PublishAsync(new StartChain("chain-" + Interlocked.Increment(ref _next), steps));
        }

        await all.WaitAsync(TimeSpan.FromMinutes(10));
    }

    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync();
        _host.Dispose();
        await PatternsEngine.DropAsync(_file, _schema);
    }
}

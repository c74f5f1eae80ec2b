using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.Orchestration.Activities;
using Patterns.Orchestration.History;
using Patterns.Orchestration.Runtime;
using Patterns.Postgres;
using Patterns.Sqlite;
using Patterns.Testing;

namespace Patterns.Orchestration.Tests;

public enum StoreKind
{
    InMemory,
    Sqlite,
    Postgres,
}

/// <summary>A host with the engine on a chosen store and a <see cref="FakeTimeProvider"/>; waits on commit signals, never sleeps.</summary>
internal sealed class TestHost : IAsyncDisposable
{
    public static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);
    private readonly ConcurrentQueue<(string Id, HistoryEvent Event)> _events = new();
    private readonly List<(Func<string, HistoryEvent, bool> Match, TaskCompletionSource Done)> _waits = [];
    private bool _disposed;

    private TestHost(IHost host, FakeTimeProvider time)
    {
        Host = host;
        Time = time;
        Runtime = host.Services.GetRequiredService<WorkflowRuntime>();
        Runtime.Committed += OnCommitted;
        Client = host.Services.GetRequiredService<IWorkflowClient>();
        Log = host.Services.GetRequiredService<CallLog>();
        Worker = host.Services.GetRequiredService<ActivityWorker>();
    }

    public IHost Host { get; }

    public FakeTimeProvider Time { get; }

    public WorkflowRuntime Runtime { get; }

    public IWorkflowClient Client { get; }

    public CallLog Log { get; }

    public ActivityWorker Worker { get; }

    public IEnumerable<HistoryEvent> EventsOf(string id) => _events.Where(e => e.Id == id).Select(e => e.Event);

    public static async Task<TestHost> StartAsync(
        Action<OrchestrationBuilder> configure, StoreKind store = StoreKind.InMemory, string? location = null, FakeTimeProvider? time = null, CallLog? log = null, TimeProvider? clock = null, Action<IServiceCollection>? services = null,
        Func<IServiceProvider, Patterns.Transport.MessageTransport>? transport = null)
    {
        time ??= new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(log ?? new CallLog());
        builder.AddPatterns(p =>
        {
            p.UseInMemory().UseTimeProvider(clock ?? time);
            if (transport is not null)
            {
                p.UseTransport(transport);
            }
        });
        builder.AddEventSourcing(es =>
        {
            switch (store)
            {
                case StoreKind.Sqlite:
                    es.UseSqlite($"Data Source={location}");
                    break;
                case StoreKind.Postgres:
                    es.UsePostgres(o =>
                    {
                        o.ConnectionString = Postgres.ConnectionString;
                        o.Schema = location!;
                    });
                    break;
            }
        });
        builder.AddOrchestration(configure);
        services?.Invoke(builder.Services);
        var host = builder.Build();
        await host.StartAsync();
        return new TestHost(host, time);
    }

    /// <summary>Waits until an event matching <paramref name="match"/> is committed (or already was).</summary>
    public Task WaitForAsync(string instanceId, Func<HistoryEvent, bool> match)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_waits)
        {
            if (_events.Any(e => e.Id == instanceId && match(e.Event)))
            {
                return Task.CompletedTask;
            }

            _waits.Add(((id, e) => id == instanceId && match(e), done));
        }

        return done.Task.WaitAsync(Wait);
    }

    public Task WaitForAsync(string instanceId, HistoryEventKind kind, int count = 1) =>
        WaitForAsync(instanceId, e => e.Kind == kind && _events.Count(x => x.Id == instanceId && x.Event.Kind == kind) >= count);

    public Task<T> ResultAsync<T>(string instanceId) => Client.GetResultAsync<T>(instanceId).WaitAsync(Wait);

    /// <summary>Gets how many events this host committed.</summary>
    public int CommittedEvents => _events.Count;

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        Runtime.Committed -= OnCommitted;
        await Host.StopAsync();
        Host.Dispose();
    }

    private void OnCommitted(string id, IReadOnlyList<HistoryEvent> events)
    {
        lock (_waits)
        {
            foreach (var e in events)
            {
                _events.Enqueue((id, e));
            }

            for (var i = 0; i < _waits.Count; i++)
            {
                if (events.Any(e => _waits[i].Match(id, e)))
                {
                    _waits[i].Done.TrySetResult();
                    _waits.RemoveAt(i--);
                }
            }
        }
    }
}

/// <summary>What the test activities did, in order, across attempts and hosts.</summary>
public sealed class CallLog
{
    private readonly ConcurrentQueue<string> _calls = new();
    private readonly List<(string Call, TaskCompletionSource Done)> _waits = [];

    public IReadOnlyList<string> Calls => [.. _calls];

    public void Add(string call)
    {
        lock (_waits)
        {
            _calls.Enqueue(call);
            foreach (var wait in _waits.Where(w => w.Call == call).ToList())
            {
                wait.Done.TrySetResult();
                _waits.Remove(wait);
            }
        }
    }

    /// <summary>Waits until <paramref name="call"/> is logged (or was).</summary>
    public Task WaitForAsync(string call)
    {
        lock (_waits)
        {
            if (_calls.Contains(call))
            {
                return Task.CompletedTask;
            }

            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waits.Add((call, done));
            return done.Task.WaitAsync(TestHost.Wait);
        }
    }

    public int Count(string call) => _calls.Count(c => c == call);
}

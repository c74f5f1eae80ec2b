using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Patterns.Compare;

/// <summary>A server a row needs; a row whose server cannot be reached is skipped, and the report says so.</summary>
public enum Requirement
{
    /// <summary>Nothing outside the process (in-memory, or a SQLite file).</summary>
    None,

    /// <summary>The RabbitMQ broker named by PATTERNS_RABBITMQ.</summary>
    RabbitMq,

    /// <summary>The PostgreSQL server named by PATTERNS_POSTGRES.</summary>
    Postgres,
}

/// <summary>What a row's scenario gets: where to record deliveries, and a name prefix unique to this launch.</summary>
public sealed class RunContext(int capacity)
{
    /// <summary>Gets the recorder every handler reports to.</summary>
    public Deliveries Deliveries { get; } = new(capacity);

    /// <summary>Gets a prefix for queue, exchange and schema names, unique to this launch, so launches never meet.</summary>
    public string Prefix { get; } = "cmp" + Guid.NewGuid().ToString("N")[..10];
}

/// <summary>
/// One row's workload: <see cref="StartAsync"/> builds and starts its host; <see cref="RunAsync"/> produces
/// <c>count</c> orders from sequence <c>first</c> and returns once every delivery has been recorded in
/// <see cref="RunContext.Deliveries"/> (after <see cref="Deliveries.Expect"/>); <see cref="DisposeAsync"/> stops the
/// host and deletes what the launch created on a server.
/// </summary>
public interface IScenario : IAsyncDisposable
{
    /// <summary>Gets the number of deliveries one message makes (2 for pub/sub to two subscribers).</summary>
    int Fanout => 1;

    /// <summary>Gets a value indicating whether latencies are recorded per window or batch result rather than per message.</summary>
    bool SparseLatencies => false;

    /// <summary>Builds and starts the row's host.</summary>
    Task StartAsync(RunContext context, CancellationToken cancellationToken);

    /// <summary>Prepares the input of a run (an ETL row writes its file), before the run is timed; by default nothing.</summary>
    Task PrepareAsync(int first, int count, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Produces orders <paramref name="first"/> .. <paramref name="first"/> + <paramref name="count"/> - 1 and waits until all are handled.</summary>
    Task RunAsync(int first, int count, CancellationToken cancellationToken);
}

/// <summary>
/// A row of the comparison: a pattern over a transport or store. <see cref="Create"/> makes a fresh scenario in the
/// launch's process. To add a row (an ETL load, a workflow, a peer link), write an <see cref="IScenario"/> and add a
/// <see cref="Row"/> to <see cref="Catalog.Rows"/>; the runner, report and chart pick it up.
/// </summary>
/// <param name="Id">A short id, used on the command line (<c>--filter</c>) and to launch the row.</param>
/// <param name="Pattern">The pattern; rows of one pattern are compared with the pattern's first row.</param>
/// <param name="Transport">The transport or store.</param>
/// <param name="Requires">The server the row needs.</param>
/// <param name="Setup">What the row does, with its durability settings, for the report.</param>
/// <param name="Create">Creates the scenario.</param>
public sealed record Row(string Id, string Pattern, string Transport, Requirement Requires, string Setup, Func<IScenario> Create);

/// <summary>
/// A scenario over a container built without a generic host, started and stopped like one. A row over peer links has a
/// second node (<see cref="HasRemoteNode"/>): a container of its own in the same process, started first, that runs the
/// handlers (<see cref="ConfigureRemote"/>) while the first one produces.
/// </summary>
public abstract class HostedScenario : IScenario
{
    private ServiceProvider? _services;
    private ServiceProvider? _remote;

    /// <summary>Gets the started container.</summary>
    protected IServiceProvider Services => _services ?? throw new InvalidOperationException("The scenario has not started.");

    /// <summary>Gets the launch's context.</summary>
    protected RunContext Context { get; private set; } = null!;

    /// <inheritdoc />
    public virtual int Fanout => 1;

    /// <inheritdoc />
    public virtual bool SparseLatencies => false;

    /// <inheritdoc />
    public async Task StartAsync(RunContext context, CancellationToken cancellationToken)
    {
        Context = context;
        if (HasRemoteNode)
        {
            _remote = await StartNodeAsync(ConfigureRemote, cancellationToken);
        }

        _services = await StartNodeAsync(Configure, cancellationToken);
        if (_remote is not null)
        {
            await LinkedAsync(_services, _remote, cancellationToken);
        }

        await StartedAsync(cancellationToken);
    }

    /// <inheritdoc />
    public abstract Task RunAsync(int first, int count, CancellationToken cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await StopNodeAsync(_services);
        _services = null;
        await StopNodeAsync(_remote);
        _remote = null;
        await CleanupAsync();
        GC.SuppressFinalize(this);
    }

    /// <summary>Gets a value indicating whether the row runs a second node (see <see cref="ConfigureRemote"/>).</summary>
    protected virtual bool HasRemoteNode => false;

    /// <summary>Registers the row's services.</summary>
    protected abstract void Configure(IServiceCollection services);

    /// <summary>Registers the services of the second node, which starts before the first.</summary>
    protected virtual void ConfigureRemote(IServiceCollection services)
    {
    }

    /// <summary>Runs when both nodes have started (wait here until they are linked).</summary>
    protected virtual Task LinkedAsync(IServiceProvider local, IServiceProvider remote, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Runs after the hosted services started.</summary>
    protected virtual Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Deletes what the launch created outside the process.</summary>
    protected virtual Task CleanupAsync() => Task.CompletedTask;

    private static async Task StopNodeAsync(ServiceProvider? node)
    {
        if (node is null)
        {
            return;
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        foreach (var hosted in node.GetServices<IHostedService>().Reverse())
        {
            await hosted.StopAsync(timeout.Token);
        }

        await node.DisposeAsync();
    }

    private async Task<ServiceProvider> StartNodeAsync(Action<IServiceCollection> configure, CancellationToken cancellationToken)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton(Context);
        services.AddSingleton(Context.Deliveries);
        configure(services);
        var node = services.BuildServiceProvider();
        foreach (var hosted in node.GetServices<IHostedService>())
        {
            await hosted.StartAsync(cancellationToken);
        }

        return node;
    }
}

using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Orchestration;

namespace Patterns.Compare.Scenarios;

/// <summary>
/// The 3-step workflow: price the order (the shared handler, as an activity), reserve its stock, confirm it. Each step
/// is an activity task: scheduled in the instance's history, run by an activity worker, its result recorded in the
/// history before the next step.
/// </summary>
public sealed class OrderWorkflow : Workflow<OrderPlaced, decimal>
{
    /// <inheritdoc />
    public override async Task<decimal> RunAsync(WorkflowContext context, OrderPlaced input)
    {
        var total = await context.CallActivityAsync<decimal>("price", input);
        await context.CallActivityAsync<int>("reserve", input.Sequence);
        await context.CallActivityAsync<int>("confirm", input.Sequence);
        return total;
    }
}

/// <summary>
/// A 3-step workflow per order: <see cref="Callers"/> callers in parallel, each starting an instance (id: the order's
/// sequence) and awaiting its result before the next. Histories in the row's store; activity tasks on the row's
/// transport. Latency: from the order's creation to its workflow's result.
/// </summary>
public sealed class WorkflowScenario(StoreKind store, TransportKind transport) : MessagingScenario(transport)
{
    /// <summary>Callers in parallel (instances in flight).</summary>
    public const int Callers = 64;

    private readonly RowStore _rowStore = new(store);
    private IWorkflowClient? _client;

    /// <inheritdoc />
    protected override IEnumerable<string> Names =>
        ["orchestration.activities", "orchestration.results", $"orchestration.cancellations.{Environment.MachineName}.{Environment.ProcessId}"];

    /// <inheritdoc />
    public override async Task RunAsync(int first, int count, CancellationToken cancellationToken)
    {
        var deliveries = Context.Deliveries;
        deliveries.Expect(count);
        var client = _client!;
        await Producer.RunCallersAsync(
            first,
            count,
            Callers,
            async i =>
            {
                var order = Orders.Create(i);
                var id = "order-" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
                await client.StartAsync(nameof(OrderWorkflow), id, order, cancellationToken);
                var total = await client.GetResultAsync<decimal>(id, cancellationToken);
                if (total != OrderHandler.Handle(order))
                {
                    throw new InvalidOperationException($"Workflow {id} returned {total}, not the order's total.");
                }

                deliveries.Record(order.SentAt);
            },
            cancellationToken);
        await deliveries.Completion.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    protected override void ConfigurePattern(IServiceCollection services)
    {
        services.AddEventSourcing(es => _rowStore.Use(es, Context));
        services.AddOrchestration(o => o
            .AddWorkflow<OrderWorkflow>()
            .AddActivity<OrderPlaced, decimal>("price", static (order, _) => Task.FromResult(OrderHandler.Handle(order)))
            .AddActivity<int, int>("reserve", static (sequence, _) => Task.FromResult(sequence))
            .AddActivity<int, int>("confirm", static (sequence, _) => Task.FromResult(sequence)));
    }

    /// <inheritdoc />
    protected override Task StartedAsync(CancellationToken cancellationToken)
    {
        _client = Services.GetRequiredService<IWorkflowClient>();
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    protected override async Task CleanupAsync()
    {
        await base.CleanupAsync();
        await _rowStore.CleanupAsync();
    }
}

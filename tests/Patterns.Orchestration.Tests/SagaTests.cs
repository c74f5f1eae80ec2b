using Microsoft.Extensions.DependencyInjection;
using Patterns.Messaging;
using Patterns.PubSub;

namespace Patterns.Orchestration.Tests;

public sealed record Deposit(string AccountId, int Amount);

public sealed record Shipped(string OrderId);

/// <summary>Four steps with compensations; the step named in the input fails.</summary>
public sealed class CompensatingWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string failAt)
    {
        var saga = new CompensationScope();
        try
        {
            foreach (var step in new[] { "A", "B", "C", "D" })
            {
                await context.CallActivityAsync(step == failAt ? "AlwaysFails" : "Record", "do-" + step, new ActivityOptions { Retry = RetryPolicy.None });
                saga.Add(() => context.CallActivityAsync("Record", "undo-" + step));
            }

            return "completed";
        }
        catch (ActivityFailureException)
        {
            await saga.CompensateAsync();
            return "compensated";
        }
    }
}

/// <summary>Sums correlated deposits until it has seen the expected number.</summary>
public sealed class AccountWorkflow : Workflow<int, int>
{
    public override async Task<int> RunAsync(WorkflowContext context, int expected)
    {
        var sum = 0;
        for (var i = 0; i < expected; i++)
        {
            sum += (await context.WaitForMessageAsync<Deposit>()).Amount;
        }

        return sum;
    }
}

/// <summary>Waits for a shipment confirmation with a durable timeout, compensating when it does not come.</summary>
public sealed class ShippingWorkflow : Workflow<string, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, string orderId)
    {
        var saga = new CompensationScope();
        await context.CallActivityAsync("Record", "charge-" + orderId);
        saga.Add(() => context.CallActivityAsync("Record", "refund-" + orderId));
        try
        {
            var shipped = await context.WaitForMessageAsync<Shipped>(TimeSpan.FromHours(1));
            return "shipped " + shipped.OrderId;
        }
        catch (TimeoutException)
        {
            await saga.CompensateAsync();
            return "timed out";
        }
    }
}

/// <summary>The sagas on the in-process transport and on RabbitMQ (correlated messages, activities and their results all cross the broker).</summary>
public sealed class SagaTests : IAsyncLifetime
{
    private Rabbit? _rabbit;

    public ValueTask InitializeAsync() => ValueTask.CompletedTask;

    public ValueTask DisposeAsync() => _rabbit?.DisposeAsync() ?? ValueTask.CompletedTask;

    private static void Register(OrchestrationBuilder o) => o
        .AddWorkflow<CompensatingWorkflow>()
        .AddWorkflow<AccountWorkflow>()
        .AddWorkflow<ShippingWorkflow>()
        .AddActivities<TestActivities>()
        .CorrelateMessage<Deposit>("deposits", d => d.AccountId)
        .CorrelateMessage<Shipped>("shipments", s => "ship-" + s.OrderId);

    [Theory]
    [InlineData(TransportKind.InMemory, "B", new[] { "do-A", "undo-A" })]
    [InlineData(TransportKind.InMemory, "D", new[] { "do-A", "do-B", "do-C", "undo-C", "undo-B", "undo-A" })]
    [InlineData(TransportKind.InMemory, "none", new[] { "do-A", "do-B", "do-C", "do-D" })]
    [InlineData(TransportKind.RabbitMq, "B", new[] { "do-A", "undo-A" })]
    [InlineData(TransportKind.RabbitMq, "D", new[] { "do-A", "do-B", "do-C", "undo-C", "undo-B", "undo-A" })]
    [InlineData(TransportKind.RabbitMq, "none", new[] { "do-A", "do-B", "do-C", "do-D" })]
    public async Task Compensation_AfterAFailure_RunsInReverseOrder(TransportKind transport, string failAt, string[] expected)
    {
        await using var host = await StartAsync(transport);

        await host.Client.StartAsync(nameof(CompensatingWorkflow), "saga", failAt);
        var result = await host.ResultAsync<string>("saga");

        result.Should().Be(failAt == "none" ? "completed" : "compensated");
        host.Log.Calls.Where(c => c.StartsWith("do-", StringComparison.Ordinal) || c.StartsWith("undo-", StringComparison.Ordinal)).Should().Equal(expected);
    }

    [Theory]
    [InlineData(TransportKind.InMemory)]
    [InlineData(TransportKind.RabbitMq)]
    public async Task CorrelatedMessages_ArrivingConcurrently_AreAllAppliedWithNoLostUpdate(TransportKind transport)
    {
        await using var host = await StartAsync(transport);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();
        const int count = 200;
        await host.Client.StartAsync(nameof(AccountWorkflow), "acct-1", count);

        await Task.WhenAll(Enumerable.Range(1, count).Select(i => Task.Run(async () => await publisher.PublishAsync("deposits", new Deposit("acct-1", i)))));

        (await host.ResultAsync<int>("acct-1")).Should().Be(count * (count + 1) / 2);
        var history = await host.Client.GetHistoryAsync("acct-1");
        history.Events.Count(e => e.Kind == History.HistoryEventKind.SignalReceived).Should().Be(count);
    }

    [Theory]
    [InlineData(TransportKind.InMemory)]
    [InlineData(TransportKind.RabbitMq)]
    public async Task CorrelatedMessage_DeliveredTwice_IsAppliedOnce(TransportKind transport)
    {
        await using var host = await StartAsync(transport);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();
        await host.Client.StartAsync(nameof(AccountWorkflow), "acct-2", 2);
        var id = Guid.NewGuid();

        await publisher.PublishAsync("deposits", new Deposit("acct-2", 5), new MessageOptions { MessageId = id });
        await host.WaitForAsync("acct-2", History.HistoryEventKind.SignalReceived);
        await publisher.PublishAsync("deposits", new Deposit("acct-2", 5), new MessageOptions { MessageId = id });
        await publisher.PublishAsync("deposits", new Deposit("acct-2", 7));

        (await host.ResultAsync<int>("acct-2")).Should().Be(12);
    }

    [Theory]
    [InlineData(TransportKind.InMemory)]
    [InlineData(TransportKind.RabbitMq)]
    public async Task MessageWait_WithDurableTimeout_CompensatesWhenNoMessageComes(TransportKind transport)
    {
        await using var host = await StartAsync(transport);
        var publisher = host.Host.Services.GetRequiredService<IPublisher>();

        await host.Client.StartAsync(nameof(ShippingWorkflow), "ship-1", "1");
        await host.Client.StartAsync(nameof(ShippingWorkflow), "ship-2", "2");
        await host.WaitForAsync("ship-1", History.HistoryEventKind.TimerStarted);
        await host.WaitForAsync("ship-2", History.HistoryEventKind.TimerStarted);
        await publisher.PublishAsync("shipments", new Shipped("2"));
        (await host.ResultAsync<string>("ship-2")).Should().Be("shipped 2");
        host.Time.Advance(TimeSpan.FromHours(1));

        (await host.ResultAsync<string>("ship-1")).Should().Be("timed out");
        host.Log.Calls.Where(c => c.StartsWith("charge-", StringComparison.Ordinal) || c.StartsWith("refund-", StringComparison.Ordinal))
            .Should().BeEquivalentTo("charge-1", "charge-2", "refund-1");
    }

    /// <summary>A host on the in-memory store and the chosen transport; on RabbitMQ with a name prefix of this test's own, deleted when it ends.</summary>
    private async Task<TestHost> StartAsync(TransportKind transport)
    {
        if (transport == TransportKind.InMemory)
        {
            return await TestHost.StartAsync(Register);
        }

        _rabbit = await Rabbit.RequireAsync("wf-saga");
        return await TestHost.StartAsync(Register, transport: _rabbit.Transport());
    }
}

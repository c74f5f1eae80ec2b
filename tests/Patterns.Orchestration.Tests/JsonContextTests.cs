using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Patterns.Orchestration.Tests;

public sealed record Shipment(string Id);

public sealed record Delivered(string ShipmentId);

public sealed record Quote(decimal Price);

public sealed class ShippingActivities
{
    public Task<Quote> PriceAsync(Shipment shipment) => Task.FromResult(new Quote(shipment.Id.Length));

    public Task Notify() => Task.CompletedTask;
}

public sealed class ShipmentWorkflow : Workflow<Shipment, string>
{
    public override async Task<string> RunAsync(WorkflowContext context, Shipment input)
    {
        var quote = await context.CallActivityAsync<Quote>("Price", input);
        await context.CallActivityAsync("Notify");
        return $"{input.Id}: {quote.Price}";
    }
}

/// <summary>Knows the workflow's input and result, but neither the activity's result nor the correlated message.</summary>
[JsonSerializable(typeof(Shipment))]
[JsonSerializable(typeof(string))]
internal sealed partial class PartialShippingJson : JsonSerializerContext;

[JsonSerializable(typeof(Shipment))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(Quote))]
[JsonSerializable(typeof(Delivered))]
internal sealed partial class CompleteShippingJson : JsonSerializerContext;

public sealed class JsonContextTests
{
    [Fact]
    public async Task Start_RegisteredTypesMissingFromTheJsonContext_FailsNamingEachOne()
    {
        using var host = Build(PartialShippingJson.Default);

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<OptionsValidationException>()).Which;
        thrown.Failures.Should().ContainSingle().Which.Should().StartWith(
            "The JSON serializer has no metadata for 'Patterns.Orchestration.Tests.Delivered', 'Patterns.Orchestration.Tests.Quote', which workflow histories must record")
            .And.Contain("UseSystemTextJson(context)");
    }

    [Fact]
    public async Task Start_EveryRegisteredTypeInTheJsonContext_StartsAndRunsTheWorkflow()
    {
        using var host = Build(CompleteShippingJson.Default);
        await host.StartAsync();
        var client = host.Services.GetRequiredService<IWorkflowClient>();

        await client.StartAsync(nameof(ShipmentWorkflow), "s-1", new Shipment("abc"));

        (await client.GetResultAsync<string>("s-1").WaitAsync(TestHost.Wait)).Should().Be("abc: 3");
        await host.StopAsync();
    }

    private static IHost Build(JsonSerializerContext context)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.AddPatterns(p => p.UseInMemory().UseSystemTextJson(context));
        builder.AddOrchestration(o => o
            .AddWorkflow<ShipmentWorkflow>()
            .AddActivity<ShippingActivities, Shipment, Quote>("Price", static (a, shipment, _) => a.PriceAsync(shipment))
            .AddActivity<ShippingActivities, object, object?>("Notify", static async (a, _, _) =>
            {
                await a.Notify();
                return null;
            })
            .CorrelateMessage<Delivered>("deliveries", static d => d.ShipmentId));
        return builder.Build();
    }
}

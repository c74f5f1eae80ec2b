using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Patterns.RabbitMq.Tests;

[JsonSerializable(typeof(WorkItem))]
internal sealed partial class OnlyWorkItemJson : JsonSerializerContext;

public sealed class RabbitMqJsonContextTests
{
    [Fact]
    public async Task Start_MessageTypesMissingFromTheJsonContext_FailsNamingEachOne()
    {
        var builder = RabbitHost.CreateBuilder(Broker.Prefix("json-ctx"));
        builder.AddPatterns(p => p.UseSystemTextJson(OnlyWorkItemJson.Default));
        builder.AddPubSub(ps => ps.Subscribe<OrderPlaced>((m, c, ct) => default, "orders.*"));
        builder.AddMessageQueue(q => q.AddQueue("json-work").AddConsumer<WorkItem>("json-work", (m, c, ct) => default));
        builder.AddRequestResponse(r => r.AddHandler<GetQuote, Quote>((q, ct) => new(new Quote(q.Symbol, 1m))));
        using var host = builder.Build();

        var act = () => host.StartAsync();

        var thrown = (await act.Should().ThrowAsync<InvalidOperationException>()).Which;
        thrown.Message.Should().StartWith(
            "The JSON serializer has no metadata for 'Patterns.RabbitMq.Tests.GetQuote', 'Patterns.RabbitMq.Tests.OrderPlaced', 'Patterns.RabbitMq.Tests.Quote', which transport 'rabbitmq' must serialize.");
        thrown.Message.Should().NotContain("WorkItem").And.Contain("UseSystemTextJson(context)");
    }
}
